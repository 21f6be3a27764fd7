"""genlab.data.load and the catalogue: digits, splits, sources, errors for people."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

import genlab.data as gd
from genlab.errors import DataError


def test_digits_values_labels_and_spec():
    data = gd.load("digits")
    bunch = load_digits()
    assert data.storage.shape == (1797, 1, 8, 8) and data.storage.dtype == torch.float32
    assert torch.equal(data.storage * 16, torch.from_numpy(bunch.images).float().unsqueeze(1))
    assert torch.equal(data.labels, torch.tensor(bunch.target).long())
    spec = data.spec
    assert (spec.kind, spec.shape, spec.levels, spec.num_classes, spec.value_range) == ("image", (1, 8, 8), 17, 10, (0.0, 1.0))
    assert spec.class_names == tuple("0123456789")
    # float storage is returned as is: pixel / 16 in [0, 1]
    assert torch.equal(data.get_batch(torch.arange(3)).x, data.storage[:3])


def test_digits_split_is_the_documented_permutation():
    data = gd.load("digits")
    perm = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    splits = data._splits
    assert torch.equal(splits["test"], perm[:180]) and torch.equal(splits["val"], perm[180:360])
    assert torch.equal(splits["train"], perm[360:])
    assert [len(data.split(s)) for s in ("train", "val", "test")] == [1437, 180, 180]
    assert sorted(torch.cat(list(splits.values())).tolist()) == list(range(1797))  # disjoint and covering
    other = gd.load("digits", seed=1)
    assert torch.equal(gd.load("digits").test.storage, data.test.storage)
    assert not torch.equal(other._splits["test"], splits["test"])
    assert other.source == {"name": "digits", "seed": 1}


def test_seeded_splits_helpers():
    s = gd.seeded_splits(11, seed=5, val_fraction=0.2, test_fraction=0.3)
    assert [len(s[k]) for k in ("train", "val", "test")] == [6, 2, 3]
    train, val = gd.carve_validation(torch.arange(10, 20), 4, seed=0)
    assert len(val) == 4 and sorted(torch.cat([train, val]).tolist()) == list(range(10, 20))
    with pytest.raises(DataError, match="sum below 1"):
        gd.seeded_splits(10, val_fraction=0.5, test_fraction=0.5)


def test_catalogue_and_sources_round_trip():
    names = dict(gd.list_datasets())
    expected = {"digits", "moons", "circles", "swissroll", "8gaussians", "checkerboard", "pinwheel", "rings",
                "grid25", "ring8", "iris", "wine", "breast_cancer", "diabetes", "mnist", "fashion_mnist", "cifar10"}
    assert set(names) == expected and all(isinstance(d, str) and d for d in names.values())
    for name in ("digits", "8gaussians", "wine"):
        data = gd.load(name, seed=2)
        assert torch.equal(gd.load(**data.source).storage, data.storage)
        assert data.train.source == data.source  # splits keep the way back
    assert gd.load(name="moons", n=100).source == {"name": "moons", "seed": 0, "n": 100}
    assert gd.load(name_or_path="MOONS", n=100).spec.name == "moons"


def test_errors_are_for_people(tmp_path):
    with pytest.raises(DataError, match=r"unknown dataset 'mnsit' \(did you mean mnist.*\); known names: digits, moons.*"
                                        r"or give the path of a folder of images"):
        gd.load("mnsit")
    with pytest.raises(DataError, match=r"no file or folder at '.*nowhere/faces.npz'"):
        gd.load(tmp_path / "nowhere" / "faces.npz")
    with pytest.raises(DataError, match="relative to"):
        gd.load("missing/folder")
    with pytest.raises(DataError, match="dataset 'digits' has no option 'n'; it takes no options"):
        gd.load("digits", n=5)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="cannot tell how to read .*notes.txt"):
        gd.load(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="not both"):
        gd.load("digits", name="digits")
