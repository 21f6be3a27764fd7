"""Class balancing (`genlab.apps.balance`, `genlab balance`): the plan of counts, exact class
conditioning, and the augmented data written back in the input's own format (CSV, image folder
with class sub-folders, .npz), with the input's bytes, dtypes, layout and label values kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import genlab
from genlab.apps.balance import class_counts, generate_classes, plan_balance
from genlab.cli.main import main
from genlab.errors import ConfigError

TINY = ["--batch-size", "32", "--log-every", "1", "--no-progress", "--no-tensorboard", "--sample-every", "0",
        "--num-samples", "4"]
TINY_TABULAR = ["--set", "latent_dim=4", "--set", "hidden=16", "--set", "autoencoder_hidden=16", "--set", "sample_steps=3"]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)  # tiny nets: threads only spin on a shared CPU


# -- the plan ------------------------------------------------------------------------------------------
def test_plan_balance_goals():
    counts = [50, 5, 20]
    assert plan_balance(counts) == {1: 45, 2: 30}
    assert plan_balance(counts, "balance") == {1: 45, 2: 30}
    assert plan_balance(counts, 30) == {1: 25, 2: 10}
    assert plan_balance(counts, "30") == {1: 25, 2: 10}
    assert plan_balance(counts, "b=12", ["a", "b", "c"]) == {1: 7}
    assert plan_balance(counts, "1=12,c=20", ["a", "b", "c"]) == {1: 7}  # c already has 20: nothing to add
    assert plan_balance(counts, {"b": 6}, ["a", "b", "c"]) == {1: 1}
    assert plan_balance([10, 10]) == {}


@pytest.mark.parametrize("goal, words", [
    ("a=10", "already has 50"),       # below a class's count
    ("z=10", "not a class"),
    ("a:10", "CLASS=N"),
    (0, "positive"),
    ("b=many", "whole number"),
])
def test_plan_balance_refuses(goal, words):
    with pytest.raises(ConfigError, match=words):
        plan_balance([50, 5, 20], goal, ["a", "b", "c"])


def test_class_counts():
    assert class_counts(torch.tensor([0, 2, 2, 2]), 4) == [1, 0, 3, 0]


# -- exact conditioning ----------------------------------------------------------------------------------
def test_generate_classes_tabular_rows_are_of_the_asked_class():
    data = genlab.data.load("iris")
    model = genlab.create("tabular", data=data, latent_dim=4, hidden=(16,), autoencoder_hidden=(16,), sample_steps=3).eval()
    samples = generate_classes(model, {0: 7, 2: 5}, seed=3, batch_size=4)  # batches split the classes
    assert samples.labels.tolist() == [0] * 7 + [2] * 5
    rows = data.decode_rows(samples.x)
    names = list(data.spec.class_names)
    # the label column is an input of the model, so every row holds the class asked for, untrained
    assert [names.index(str(v)) for v in rows["target"]] == samples.labels.tolist()
    again = generate_classes(model, {0: 7, 2: 5}, seed=3, batch_size=4)
    assert torch.equal(samples.x, again.x)  # seeded


def test_generate_classes_needs_a_conditional_model():
    data = genlab.data.load("digits")
    model = genlab.create("vae", data=data, latent_dim=2, hidden=(8,))
    with pytest.raises(ConfigError, match="without class labels"):
        generate_classes(model, {1: 2})


# -- CSV in, CSV out -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def skewed_csv(tmp_path_factory):
    root = tmp_path_factory.mktemp("csv")
    rng = np.random.default_rng(0)
    n_big, n_small = 60, 6
    frame = pd.DataFrame({
        "size": np.r_[rng.normal(10, 1, n_big), rng.normal(20, 1, n_small)].round(2),
        "colour": rng.choice(["red", "blue"], n_big + n_small),
        "grade": ["common"] * n_big + ["rare"] * n_small,
        "count": rng.integers(0, 5, n_big + n_small),
    })
    frame.loc[3, "size"] = np.nan
    path = root / "skewed.csv"
    frame.to_csv(path, index=False)
    return path


def test_balance_csv_keeps_the_input_and_adds_the_rare_class(skewed_csv, tmp_path):
    out = tmp_path / "balanced.csv"
    argv = ["balance", str(skewed_csv), "--data-option", "target=grade", "--out", str(out), "--model", "tabular",
            *TINY_TABULAR, "--run-out", str(tmp_path / "run"), "--max-steps", "3", *TINY]
    assert main(argv) == 0
    original = skewed_csv.read_bytes()
    written = out.read_bytes()
    assert written.startswith(original)  # the user's rows, byte for byte
    table = pd.read_csv(out)
    assert list(table.columns) == ["size", "colour", "grade", "count"]
    assert table["grade"].value_counts().to_dict() == {"common": 60, "rare": 60}
    added = table.iloc[66:]
    assert (added["grade"] == "rare").all()  # conditioned, not filtered
    assert set(added["colour"]) <= {"red", "blue"}  # no category invented
    # the generator learnt from every row, the 6 rare ones included (none held out)
    frequencies = genlab.load(tmp_path / "run").condition_frequencies
    assert torch.allclose(frequencies, torch.tensor([60 / 66, 6 / 66], dtype=frequencies.dtype))
    assert added["count"].dropna().between(0, 4).all() and (added["count"].dropna() % 1 == 0).all()
    # a second balance with the run: nothing left to add when the counts already hold
    again = tmp_path / "again.csv"
    assert main(["balance", str(out), "--run", str(tmp_path / "run"), "--out", str(again), "--counts", "rare=60"]) == 0
    assert again.read_bytes() == written


def test_balance_csv_to_given_counts_and_marked(skewed_csv, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "tabular", "--data", str(skewed_csv), "--data-option", "target=grade", "--out", str(run),
                 *TINY_TABULAR, "--max-steps", "2", *TINY]) == 0
    out = tmp_path / "marked.csv"
    # the run's label column is used without --data-option target=grade
    assert main(["balance", str(skewed_csv), "--run", str(run), "--out", str(out), "--counts", "rare=10,common=61",
                 "--mark-synthetic", "synthetic"]) == 0
    table = pd.read_csv(out)
    assert table["grade"].value_counts().to_dict() == {"common": 61, "rare": 10}
    assert table["synthetic"].tolist() == [False] * 66 + [True] * 5
    assert table.loc[table["synthetic"], "grade"].tolist() == ["common"] + ["rare"] * 4


# -- image folder in, image folder out --------------------------------------------------------------------------
def _folder(root, counts, size=8, mode="L"):
    rng = np.random.default_rng(1)
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            shape = (size, size) if mode == "L" else (size, size, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / cls / f"img{i}.png")
    return root


def test_balance_image_folder(tmp_path):
    source = _folder(tmp_path / "shapes", {"circle": 9, "square": 3})
    run = tmp_path / "run"
    assert main(["train", "ddpm", "--data", str(source), "--out", str(run), "--max-steps", "2", "--set", "class_conditional=true",
                 "--set", "net=mlp", "--set", "hidden=16", "--set", "steps=20", "--set", "sample_steps=3", *TINY]) == 0
    out = tmp_path / "balanced"
    assert main(["balance", str(source), "--run", str(run), "--out", str(out)]) == 0
    for cls in ("circle", "square"):
        for f in (source / cls).iterdir():  # the originals, unchanged
            assert (out / cls / f.name).read_bytes() == f.read_bytes()
    made = sorted(p.name for p in (out / "square").glob("synthetic-*.png"))
    assert made == [f"synthetic-{i:06d}.png" for i in range(6)]
    assert not list((out / "circle").glob("synthetic-*"))
    with Image.open(out / "square" / made[0]) as im:
        assert im.mode == "L" and im.size == (8, 8)
    balanced = genlab.data.load(out, cache=False)
    assert balanced.spec.class_names == ("circle", "square")
    assert class_counts(balanced.labels, 2) == [9, 9]
    # never written into an existing folder
    assert main(["balance", str(source), "--run", str(run), "--out", str(out)]) == 2
    assert not list(tmp_path.glob(".balanced.*"))  # no temporary folder left behind


# -- .npz in, .npz out ----------------------------------------------------------------------------------------
def test_balance_npz_keeps_dtype_layout_and_label_values(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (14, 8, 8, 3), dtype=np.uint8)  # NHWC
    y = np.array(["cat"] * 10 + ["dog"] * 4)
    source = tmp_path / "pets.npz"
    np.savez(source, images=x, labels=y)
    run = tmp_path / "run"
    assert main(["train", "cgan", "--data", str(source), "--out", str(run), "--max-steps", "2", "--set", "hidden=16", *TINY]) == 0
    out = tmp_path / "balanced.npz"
    assert main(["balance", str(source), "--run", str(run), "--out", str(out), "--counts", "12"]) == 0
    with np.load(out, allow_pickle=False) as saved:
        assert set(saved.files) == {"images", "labels"}
        images, labels = saved["images"], saved["labels"]
    assert images.dtype == np.uint8 and images.shape == (24, 8, 8, 3)
    assert np.array_equal(images[:14], x)
    assert labels.tolist() == y.tolist() + ["cat"] * 2 + ["dog"] * 8
    # the written file is read back as the same classes, with the counts asked for
    back = genlab.data.load(out)
    assert back.spec.class_names == ("cat", "dog") and class_counts(back.labels, 2) == [12, 12]


def test_balance_named_dataset_writes_npz(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()  # a folder of the dataset's name: the catalogue's digits are meant
    run = tmp_path / "run"
    assert main(["train", "cgan", "--data", "digits", "--out", str(run), "--max-steps", "2", "--set", "hidden=16", *TINY]) == 0
    out = tmp_path / "digits.npz"
    assert main(["balance", "digits", "--run", str(run), "--out", str(out), "--counts", "0=200"]) == 0
    with np.load(out) as saved:
        x, y = saved["x"], saved["y"]
    data = genlab.data.load("digits")
    assert x.shape == (len(data) + 200 - 178, 1, 8, 8) and x.dtype == np.float32
    assert np.array_equal(x[: len(data)], data.storage.numpy())
    assert y.dtype.kind == "i" and np.bincount(y)[0] == 200 and (y[len(data):] == 0).all()


# -- bad input: one line, exit 2 --------------------------------------------------------------------------------
def test_balance_bad_input(skewed_csv, tmp_path, capsys):
    def fails(argv, words):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err

    fails(["balance", str(skewed_csv), "--out", str(tmp_path / "o.csv")], "has no class labels")
    fails(["balance", str(skewed_csv), "--data-option", "target=grade", "--out", str(skewed_csv)], "is the input itself")
    fails(["balance", str(skewed_csv), "--data-option", "target=grade", "--out", str(tmp_path / "o.npz")], "ending in .csv")
    fails(["balance", str(skewed_csv), "--data-option", "target=grade", "--out", str(tmp_path / "o.csv"), "--model", "vae"],
          "cannot generate chosen classes")
    fails(["balance", str(skewed_csv), "--data-option", "target=grade", "--out", str(tmp_path / "o.csv"), "--counts", "rare=2"],
          "already has 6")
    fails(["balance", "digits", "--out", str(tmp_path / "o.npz"), "--mark-synthetic", "s"], "adds a column to a table")
    run = tmp_path / "vae"
    assert main(["train", "vae", "--data", "digits", "--out", str(run), "--max-steps", "1", "--set", "latent_dim=2",
                 "--set", "hidden=8", *TINY]) == 0
    fails(["balance", "digits", "--run", str(run), "--out", str(tmp_path / "o.npz")], "trained without class labels")
    fails(["balance", "iris", "--run", str(run), "--out", str(tmp_path / "o.csv")], "makes image samples")
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "o.npz").exists()


def test_balance_with_ctgan(skewed_csv, tmp_path):
    """ctgan conditions on the label group, and its rows hold the asked class."""
    out = tmp_path / "ctgan.csv"
    assert main(["balance", str(skewed_csv), "--data-option", "target=grade", "--out", str(out), "--model", "ctgan",
                 "--set", "hidden=16", "--set", "pac=2", "--run-out", str(tmp_path / "run"), "--max-steps", "2", *TINY]) == 0
    table = pd.read_csv(out)
    assert table["grade"].value_counts().to_dict() == {"common": 60, "rare": 60}
    assert (table.iloc[66:]["grade"] == "rare").all()
