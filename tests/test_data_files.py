"""User files: .npy/.npz arrays, idx files, image folders and archives (with the cache), and the
standard datasets read from ../shared/datasets."""

from __future__ import annotations

import gzip
import json
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import genlab.data as gd
from genlab.data import images as images_module
from genlab.errors import DataError

RNG = np.random.default_rng(0)


# -- arrays ------------------------------------------------------------------------------------------------------
def test_npz_images_with_labels(tmp_path):
    x = RNG.integers(0, 256, (30, 5, 6), dtype=np.uint8)
    y = np.repeat(["cat", "dog", "emu"], 10)
    np.savez(tmp_path / "pets.npz", x=x, y=y)
    data = gd.load(tmp_path / "pets.npz")
    assert data.spec.kind == "image" and data.spec.shape == (1, 5, 6) and data.spec.levels == 256
    assert data.storage.dtype == torch.uint8 and torch.equal(data.storage[:, 0], torch.from_numpy(x))
    assert data.spec.class_names == ("cat", "dog", "emu") and data.labels.tolist() == [0] * 10 + [1] * 10 + [2] * 10
    batch = data.get_batch(torch.tensor([0]))
    assert torch.allclose(batch.x, torch.from_numpy(x[:1, None]).float() / 255)
    assert data.source == {"name": str((tmp_path / "pets.npz").resolve()), "seed": 0}
    assert torch.equal(gd.load(**data.source).storage, data.storage)


def test_channels_last_and_first_arrays(tmp_path):
    nhwc = RNG.integers(0, 256, (4, 7, 9, 3), dtype=np.uint8)
    np.save(tmp_path / "rgb.npy", nhwc)
    data = gd.load(tmp_path / "rgb.npy")
    assert data.spec.shape == (3, 7, 9) and torch.equal(data.storage, torch.from_numpy(nhwc).permute(0, 3, 1, 2))
    nchw = RNG.random((4, 3, 7, 9)).astype(np.float32)
    np.savez(tmp_path / "float.npz", images=nchw)
    data = gd.load(tmp_path / "float.npz")
    assert data.spec.shape == (3, 7, 9) and data.spec.levels is None and torch.equal(data.storage, torch.from_numpy(nchw))
    ambiguous = RNG.integers(0, 256, (4, 3, 5, 4), dtype=np.uint8)
    np.save(tmp_path / "ambiguous.npy", ambiguous)
    with pytest.raises(DataError, match="layout='NHWC'"):
        gd.load(tmp_path / "ambiguous.npy")
    assert gd.load(tmp_path / "ambiguous.npy", layout="NHWC").spec.shape == (4, 3, 5)


def test_vectors_from_npz(tmp_path):
    x = RNG.normal(size=(50, 3)) * 2
    np.savez(tmp_path / "points.npz", data=x, labels=np.arange(50) % 2)
    data = gd.load(tmp_path / "points.npz")
    assert data.spec.kind == "vector" and data.spec.shape == (3,) and data.spec.num_classes == 2
    lo, hi = data.spec.value_range
    assert lo == np.floor(x.min()) and hi == np.ceil(x.max())
    assert torch.allclose(data.storage, torch.from_numpy(x).float())


def test_array_errors(tmp_path):
    np.save(tmp_path / "words.npy", np.array(["a", "b", "c"]))
    with pytest.raises(DataError, match="dtype <U1 is not numeric"):
        gd.load(tmp_path / "words.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="objects.npy' is not a readable NumPy file"):
        gd.load(tmp_path / "objects.npy")
    x = RNG.random((10, 4))
    x[[2, 5], 1] = np.nan
    x[7, 0] = np.inf
    np.save(tmp_path / "holes.npy", x)
    with pytest.raises(DataError, match="3 of 10 samples hold NaN or infinite"):
        gd.load(tmp_path / "holes.npy")
    np.save(tmp_path / "bright.npy", RNG.random((5, 1, 4, 4)).astype(np.float32) * 255)
    with pytest.raises(DataError, match=r"float images must lie in \[0, 1\].*x / 255"):
        gd.load(tmp_path / "bright.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 2)), b=np.zeros((3, 2)))
    with pytest.raises(DataError, match="holds arrays a, b; name the samples x"):
        gd.load(tmp_path / "two.npz")
    assert gd.load(tmp_path / "two.npz", key="b").spec.shape == (2,)


@pytest.mark.dataset
def test_olivetti_faces(shared_datasets):
    data = gd.load(shared_datasets / "olivetti-faces" / "faces.npz")
    assert data.spec.shape == (1, 64, 64) and data.spec.levels == 256 and data.spec.num_classes == 40
    assert len(data) == 400 and torch.bincount(data.labels).tolist() == [10] * 40


# -- idx -----------------------------------------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray, type_code: int, compress: bool) -> None:
    """Independent writer: magic (0, 0, type, ndim), big-endian int32 sizes, big-endian values."""
    big_endian = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[type_code]
    raw = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    raw += array.astype(big_endian).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    suffix = ".gz" if compress else ""
    images = RNG.integers(0, 256, (12, 4, 5), dtype=np.uint8)
    labels = RNG.integers(0, 3, 12).astype(np.uint8)
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, 0x08, compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, 0x08, compress)
    assert np.array_equal(gd.read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}"), images)
    floats = RNG.normal(size=(3, 2)).astype(np.float32)
    write_idx(tmp_path / "f-idx2-float", floats, 0x0D, compress)
    shorts = np.array([-300, 7, 32000], dtype=np.int16)
    write_idx(tmp_path / "s-idx1-short", shorts, 0x0B, compress)
    assert np.array_equal(gd.read_idx(tmp_path / "f-idx2-float"), floats)
    assert np.array_equal(gd.read_idx(tmp_path / "s-idx1-short"), shorts)

    data = gd.load(tmp_path / f"train-images-idx3-ubyte{suffix}")
    assert data.spec.shape == (1, 4, 5) and torch.equal(data.storage[:, 0], torch.from_numpy(images))
    assert torch.equal(data.labels, torch.from_numpy(np.unique(labels, return_inverse=True)[1].astype(np.int64)))
    with pytest.raises(DataError, match="labels file"):
        gd.load(tmp_path / f"train-labels-idx1-ubyte{suffix}")


def test_idx_errors(tmp_path):
    path = tmp_path / "bad-idx3-ubyte"
    write_idx(path, RNG.integers(0, 256, (3, 4, 4), dtype=np.uint8), 0x08, False)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        gd.read_idx(path)
    path.write_bytes(b"\x12\x34\x56\x78rest")
    with pytest.raises(DataError, match="not an idx file"):
        gd.read_idx(path)


# -- image folders and archives ---------------------------------------------------------------------------------
def save_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_class_folder(root: Path, size=(6, 5), channels=3, per_class=3) -> dict[str, np.ndarray]:
    """root/<class>/<k>.png with random pixels; returns {relative path: pixels (H, W[, C])}."""
    shape = size if channels == 1 else (*size, channels)
    written = {}
    for name in ("zebra", "ant", "bee"):
        for k in range(per_class):
            pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
            save_png(root / name / f"{k}.png", pixels)
            written[f"{name}/{k}.png"] = pixels
    return written


def test_image_folder_with_class_subfolders(tmp_path):
    written = make_class_folder(tmp_path / "bugs")
    data = gd.load(tmp_path / "bugs", cache_dir=tmp_path / "cache")
    assert data.spec.kind == "image" and data.spec.shape == (3, 6, 5) and data.spec.levels == 256
    assert data.spec.class_names == ("ant", "bee", "zebra") and data.spec.name == "bugs"
    order = sorted(written)  # files are read in sorted path order
    for i, rel in enumerate(order):
        assert torch.equal(data.storage[i], torch.from_numpy(written[rel]).permute(2, 0, 1))
        assert data.spec.class_names[data.labels[i]] == rel.split("/")[0]
    index = torch.cat([data._splits[s] for s in ("train", "val", "test")])
    assert sorted(index.tolist()) == list(range(9))  # seeded splits: disjoint, covering


def test_grayscale_auto_resize_and_crop(tmp_path):
    save_png(tmp_path / "g" / "a.png", RNG.integers(0, 256, (8, 8), dtype=np.uint8))
    save_png(tmp_path / "g" / "b.png", RNG.integers(0, 256, (8, 8), dtype=np.uint8))
    cache = tmp_path / "cache"
    data = gd.load(tmp_path / "g", cache_dir=cache)
    assert data.spec.shape == (1, 8, 8) and data.labels is None
    assert gd.load(tmp_path / "g", grayscale=False, cache_dir=cache).spec.shape == (3, 8, 8)
    save_png(tmp_path / "g" / "c.png", RNG.integers(0, 256, (8, 16, 3), dtype=np.uint8))
    assert gd.load(tmp_path / "g", grayscale="false", resize="8", crop="none", cache="no", cache_dir=cache).spec.shape == (3, 8, 8)
    data = gd.load(tmp_path / "g", resize=4, crop="center", cache_dir=cache)
    assert data.spec.shape == (3, 4, 4)  # one RGB image: RGB for all
    assert data.source == {"name": str((tmp_path / "g").resolve()), "seed": 0, "resize": 4, "crop": "center"}
    # resizing a constant image keeps its value; centre crop takes the middle square
    wide = np.zeros((4, 12), dtype=np.uint8)
    wide[:, 4:8] = 200
    save_png(tmp_path / "w" / "wide.png", wide)
    data = gd.load(tmp_path / "w", crop="center", cache_dir=cache)
    assert data.spec.shape == (1, 4, 4) and (data.storage == 200).all()
    data = gd.load(tmp_path / "w", resize=(2, 6), cache_dir=cache)
    assert data.spec.shape == (1, 2, 6) and data.storage[0, 0, :, 0].max() < 50 and (data.storage[0, 0, :, 2:4] > 150).all()
    assert json.loads(json.dumps(data.source))["resize"] == [2, 6]  # a run's config can record it
    assert torch.equal(gd.load(**data.source, cache_dir=cache).storage, data.storage)


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no images in '.*empty'; genlab reads .png, .jpg"):
        gd.load(tmp_path / "empty")
    for size in (25, 32, 64):
        save_png(tmp_path / "faces" / f"{size}.png", np.zeros((size, size), dtype=np.uint8))
    message = (r"images in '.*faces' have 3 different sizes \(height x width: 25x25, 32x32, 64x64\); "
               r"pass resize=25 \(CLI: --data-option resize=25\) to resize them")
    with pytest.raises(DataError, match=message):
        gd.load(tmp_path / "faces", cache_dir=tmp_path / "cache")
    assert gd.load(tmp_path / "faces", resize=32, cache_dir=tmp_path / "cache").spec.shape == (1, 32, 32)
    with pytest.raises(DataError, match="crop must be 'center'"):
        gd.load(tmp_path / "faces", crop="left")
    with pytest.raises(DataError, match="options are resize, crop, grayscale, cache_dir, cache"):
        gd.load(tmp_path / "faces", size=3)


def make_tar(folder: Path, archive: Path, arcname: str) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return archive


def test_archive_matches_folder(tmp_path):
    make_class_folder(tmp_path / "bugs")
    archive = make_tar(tmp_path / "bugs", tmp_path / "bugs.tar.gz", "bugs")
    cache = tmp_path / "cache"
    folder, packed = gd.load(tmp_path / "bugs", cache_dir=cache), gd.load(archive, cache_dir=cache)
    assert packed.spec == folder.spec and torch.equal(packed.storage, folder.storage) and torch.equal(packed.labels, folder.labels)


def test_split_folders_give_official_splits(tmp_path):
    make_class_folder(tmp_path / "tree" / "train", per_class=10)
    make_class_folder(tmp_path / "tree" / "test", per_class=2)
    archive = make_tar(tmp_path / "tree", tmp_path / "tree.tgz", ".")
    data = gd.load(archive, cache_dir=tmp_path / "cache")
    assert data.spec.class_names == ("ant", "bee", "zebra")
    sizes = {s: len(data.split(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 27, "val": 3, "test": 6}
    again = gd.load(archive, cache_dir=tmp_path / "cache", seed=1)
    assert torch.equal(data.test.storage, again.test.storage) and not torch.equal(data.val.storage, again.val.storage)


def test_decoded_images_are_cached(tmp_path, monkeypatch):
    make_class_folder(tmp_path / "bugs")
    cache = tmp_path / "cache"
    first = gd.load(tmp_path / "bugs", cache_dir=cache)
    files = list(cache.glob("images-*.npz"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(images_module, "_decode_image", refuse)
    second = gd.load(tmp_path / "bugs", cache_dir=cache)
    assert torch.equal(second.storage, first.storage) and second.spec == first.spec
    monkeypatch.setenv("GENLAB_CACHE", str(cache))  # the same cache found through the environment
    assert torch.equal(gd.load(tmp_path / "bugs").storage, first.storage)
    # a changed file changes the key: the folder is decoded again
    save_png(tmp_path / "bugs" / "ant" / "0.png", np.zeros((6, 5, 3), dtype=np.uint8))
    with pytest.raises(AssertionError, match="decoded again"):
        gd.load(tmp_path / "bugs", cache_dir=cache)
    monkeypatch.undo()
    assert gd.load(tmp_path / "bugs", cache_dir=cache, cache=False).storage[0].max() == 0


# -- standard datasets ----------------------------------------------------------------------------------------------
def test_cifar10_layout_from_small_archives(tmp_path):
    """The layout of cifar10-jpeg75: two archives of train/<class>/*, test/<class>/*."""
    (tmp_path / "root" / "cifar10").mkdir(parents=True)
    for part, per_class in (("train", 20), ("test", 4)):
        make_class_folder(tmp_path / "src" / part, size=(32, 32), per_class=per_class)
        make_tar(tmp_path / "src" / part, tmp_path / "root" / "cifar10" / f"cifar10-mini-{part}.tar.gz", part)
    data = gd.load("cifar10", root=tmp_path / "root", cache_dir=tmp_path / "cache")
    assert data.spec.shape == (3, 32, 32) and data.spec.class_names == ("ant", "bee", "zebra")
    assert {s: len(data.split(s)) for s in ("train", "val", "test")} == {"train": 54, "val": 6, "test": 12}
    assert torch.equal(data.test.labels, torch.tensor([0] * 4 + [1] * 4 + [2] * 4))
    assert data.source == {"name": "cifar10", "seed": 0, "root": str((tmp_path / "root").resolve())}


def test_missing_standard_datasets_say_what_to_put_where(tmp_path, monkeypatch):
    monkeypatch.delenv("GENLAB_DATA", raising=False)
    with pytest.raises(DataError, match=r"mnist not found: put the four official files train-images-idx3-ubyte.gz, "
                                        r"train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz.*"
                                        r"GENLAB_DATA"):
        gd.load("mnist", root=tmp_path)
    (tmp_path / "fashion-mnist").mkdir()
    write_idx(tmp_path / "fashion-mnist" / "train-images-idx3-ubyte", np.zeros((2, 3, 3)), 0x08, False)
    with pytest.raises(DataError, match=r"fashion-mnist' lacks train-labels-idx1-ubyte\[.gz\], t10k-images"):
        gd.load("fashion_mnist", root=tmp_path)
    monkeypatch.setenv("GENLAB_DATA", str(tmp_path))
    with pytest.raises(DataError, match=rf"cifar10 not found: .* in '{tmp_path / 'cifar10'}/'.*--data-root"):
        gd.load("cifar10")


@pytest.mark.dataset
def test_mnist_and_fashion_mnist(shared_datasets):
    mnist = gd.load("mnist", root=shared_datasets)
    assert mnist.storage.shape == (70_000, 1, 28, 28) and mnist.storage.dtype == torch.uint8
    assert {s: len(mnist.split(s)) for s in ("train", "val", "test")} == {"train": 55_000, "val": 5_000, "test": 10_000}
    train_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(mnist.labels[:60_000]).tolist() == train_counts
    assert mnist.labels[0].item() == 5 and mnist.test.labels[0].item() == 7  # the official first digits
    index = mnist._splits
    assert len(torch.cat([index["train"], index["val"]]).unique()) == 60_000 and index["test"].min() == 60_000
    fashion = gd.load("fashion-mnist", root=shared_datasets)
    assert fashion.spec.class_names[9] == "Ankle boot"
    assert torch.bincount(fashion.labels[60_000:]).tolist() == [1000] * 10


@pytest.mark.slow
@pytest.mark.dataset
def test_real_cifar10_test_archive(shared_datasets, tmp_path):
    data = gd.load(shared_datasets / "cifar10-jpeg75" / "cifar10-jpeg75-test.tar.gz", cache_dir=tmp_path)
    assert data.storage.shape == (10_000, 3, 32, 32) and data.spec.class_names[0] == "airplane"
    assert torch.bincount(data.labels).tolist() == [1000] * 10
    mean = data.storage.float().mean().item() / 255
    assert 0.4 < mean < 0.55  # CIFAR-10's mean pixel is about 0.47
