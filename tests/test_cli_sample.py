"""The CLI a user meets: classes in `genlab sample`/`inpaint`, diffusion's sampling options, tables
back as CSV tables, per-model `train --help`, --threads after the command, TensorBoard defaults."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import genlab
from genlab.apps.sampling import draw_samples, resolve_classes
from genlab.cli.main import build_parser, main
from genlab.errors import ConfigError
from genlab.models.diffusion.samplers import SAMPLERS

TINY = ["--batch-size", "32", "--log-every", "1", "--no-progress", "--no-tensorboard", "--sample-every", "0", "--num-samples", "4"]


def train(out, model, data, steps, *sets):
    argv = ["train", model, "--data", str(data), "--out", str(out), "--max-steps", str(steps), *TINY]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)  # tiny nets: threads only spin on a shared CPU
    root = tmp_path_factory.mktemp("runs")
    return {
        "cgan": train(root / "cgan", "cgan", "digits", 2, "hidden=32"),
        "cddpm": train(root / "cddpm", "ddpm", "digits", 2, "class_conditional=true", "net=mlp", "hidden=32", "steps=50"),
        "vae": train(root / "vae", "vae", "digits", 2, "latent_dim=2", "hidden=16"),
        "iris": train(root / "iris", "vae", "iris", 5, "latent_dim=2", "hidden=16"),
        "wine": train(root / "wine", "ddpm", "wine", 3, "hidden=16", "steps=50"),
    }


def one_line_error(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err


# -- classes ------------------------------------------------------------------------------------------
def test_class_all_draws_one_grid_row_per_class(runs, tmp_path):
    assert main(["sample", str(runs["cgan"]), "--class", "all", "-n", "2", "--out", str(tmp_path / "all.png")]) == 0
    # 2 columns of 8x8 digits upscaled 16x (to >= 256 px wide), 2 px padding: 10 rows of 130 px
    assert Image.open(tmp_path / "all.png").size == (2 * 130 + 2, 10 * 130 + 2)
    assert main(["sample", str(runs["cgan"]), "-n", "20", "--out", str(tmp_path / "none.png")]) == 0
    assert Image.open(tmp_path / "none.png").size[1] < 10 * 130  # without classes: a square-ish grid of 4 rows


def test_labels_reach_the_cgan(runs, tmp_path):
    def draw(cls, name):
        assert main(["sample", str(runs["cgan"]), "--class", cls, "-n", "6", "--out", str(tmp_path / name)]) == 0
        return np.load(tmp_path / name)

    three, three_again, five = draw("3", "a.npy"), draw("3", "b.npy"), draw("5", "c.npy")
    assert three.shape == (6, 1, 8, 8) and np.array_equal(three, three_again)
    assert not np.allclose(three, five)  # the same z (seed 0), another label: another image
    several = draw("3,5", "d.npy")  # 6 of class 3, then 6 of class 5, from the same seed
    assert several.shape == (12, 1, 8, 8)


def test_draw_samples_passes_class_labels_in_rows(runs, monkeypatch):
    model = genlab.load(runs["cgan"])
    seen = {}
    original = model.sample

    def spy(n, cond=None, generator=None):
        seen["n"], seen["cond"] = n, cond
        return original(n, cond=cond, generator=generator)

    monkeypatch.setattr(model, "sample", spy)
    samples = draw_samples(model, 3, classes="all")
    assert seen["n"] == 30 and torch.equal(seen["cond"], torch.arange(10).repeat_interleave(3))
    assert samples.per_row == 3 and samples.x.shape == (30, 1, 8, 8) and torch.equal(samples.labels, seen["cond"])
    assert resolve_classes(model, "1, 4,7") == [1, 4, 7] and resolve_classes(model, [2]) == [2] and resolve_classes(model, 9) == [9]


def test_labels_reach_a_class_conditional_pixelcnn():
    data = genlab.data.load("digits")
    torch.manual_seed(0)
    model = genlab.create("pixelcnn", data=data, class_conditional=True, channels=8, blocks=1, head_channels=8).eval()
    a, b = draw_samples(model, 4, classes=2).x, draw_samples(model, 4, classes=7).x
    assert torch.equal(a, draw_samples(model, 4, classes=2).x) and not torch.equal(a, b)
    with pytest.raises(ConfigError, match="out of range: 'pixelcnn' was trained on 10 classes, 0-9"):
        draw_samples(model, 4, classes=10)
    # the model's own check, for callers of model.sample
    with pytest.raises(ConfigError, match=r"labels in \[0, 9\]"):
        model.sample(2, cond=torch.tensor([0, 12]))


def test_class_names_of_a_table_are_classes(runs):
    model = genlab.create("cgan", data=genlab.data.load("iris"))
    assert resolve_classes(model, "virginica,setosa") == [2, 0] and resolve_classes(model, "all") == [0, 1, 2]
    with pytest.raises(ConfigError, match="'rose' is not a class of 'iris'.*setosa, versicolor, virginica"):
        resolve_classes(model, "rose")


@pytest.mark.parametrize(
    "run, extra, message",
    [
        ("vae", ["--class", "3"], "'vae' takes no class labels; class-conditional models are cgan"),
        ("cgan", ["--class", "10"], "class 10 is out of range: 'cgan' was trained on 10 classes, 0-9"),
        ("cgan", ["--class", "-1"], "class -1 is out of range"),
        ("cgan", ["--class", "seven"], "class 'seven' is not a class of 'digits'"),
        ("cgan", ["--sampler", "ddim", "--steps", "3"], "--sampler and --steps are diffusion options; 'cgan' is a gan model"),
        ("vae", ["--guidance-scale", "2"], "--guidance-scale is a diffusion option"),
        ("wine", ["--guidance-scale", "2", "--out", "x.csv"], "classifier-free guidance needs a class-conditional diffusion run"),
        ("cddpm", ["--guidance-scale", "2"], "classifier-free guidance steers samples towards a class; choose one"),
        ("cddpm", ["--steps", "0"], "steps=0: a sampler takes 1 or more steps"),
        ("cgan", ["--out", "x.csv"], "a .csv holds table rows, and run"),
    ],
)
def test_sampling_errors_are_one_line(runs, run, extra, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, ["sample", str(runs[run]), *extra], message)


def test_inpaint_refuses_classes_of_an_unconditional_run(runs, capsys):
    one_line_error(capsys, ["inpaint", str(runs["wine"]), "--image", "x.png", "--class", "1"],
                   "'ddpm' was trained without class labels (class_conditional=false), so it takes no class")
    one_line_error(capsys, ["inpaint", str(runs["cddpm"]), "--image", "x.png", "--guidance-scale", "1"],
                   "classifier-free guidance steers samples towards a class")


# -- diffusion options --------------------------------------------------------------------------------
def test_diffusion_sampler_steps_and_guidance_reach_the_sampler(runs, tmp_path):
    def draw(name, *options):
        out = tmp_path / name
        assert main(["sample", str(runs["cddpm"]), "--class", "4", "-n", "3", "--out", str(out), *options]) == 0
        return np.load(out)

    base = draw("a.npy", "--sampler", "ddim", "--steps", "3", "--guidance-scale", "0")
    assert np.array_equal(base, draw("b.npy", "--sampler", "ddim", "--steps", "3", "--guidance-scale", "0"))
    assert not np.array_equal(base, draw("c.npy", "--sampler", "ddim", "--steps", "3", "--guidance-scale", "3"))
    assert not np.array_equal(base, draw("d.npy", "--sampler", "ddim", "--steps", "2", "--guidance-scale", "0"))
    assert not np.array_equal(base, draw("e.npy", "--sampler", "ancestral", "--steps", "3", "--guidance-scale", "0"))
    assert draw("f.npy", "--sampler", "auto", "--steps", "2").shape == (3, 1, 8, 8)


def test_sampler_choices_come_from_the_registry(capsys):
    for command in ("sample", "inpaint"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "one of " + ", ".join(("auto", *SAMPLERS)) in text  # dpm_solver included
        with pytest.raises(SystemExit) as exc:
            main([command, "run", "--sampler", "nosuch"])
        assert exc.value.code == 2 and "invalid choice: 'nosuch'" in capsys.readouterr().err


def test_inpaint_with_classes_writes_a_row_per_class(runs, tmp_path):
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "digit.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 4:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    common = ["inpaint", str(runs["cddpm"]), "--image", str(tmp_path / "digit.png"), "--mask", str(tmp_path / "mask.png"),
              "-n", "3", "--sampler", "ddim", "--steps", "3"]  # fmt: skip
    assert main([*common, "--class", "0,5,9", "--guidance-scale", "1", "--out", str(tmp_path / "classes.png")]) == 0
    # input | mask | 3 results per row, 8x8 tiles enlarged 8x: 5 columns and 3 rows of 66 px
    assert Image.open(tmp_path / "classes.png").size == (5 * 66 + 2, 3 * 66 + 2)
    assert main([*common, "--out", str(tmp_path / "plain.png")]) == 0
    assert Image.open(tmp_path / "plain.png").size == (5 * 66 + 2, 66 + 2)


def test_dit_summary_names_the_sampler_it_uses(capsys):
    assert main(["list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["dit"])
    model = genlab.create("dit", data=genlab.data.load("digits"))
    assert model.default_sampler == "dpm_solver" and "DPM-Solver" in line and "DDIM" not in line


# -- tables -------------------------------------------------------------------------------------------
def test_table_samples_come_back_as_the_table(runs, tmp_path, capsys):
    source = genlab.data.load("iris").frame
    assert main(["sample", str(runs["iris"]), "-n", "40", "--out", str(tmp_path / "rows.csv")]) == 0
    rows = pd.read_csv(tmp_path / "rows.csv")
    assert list(rows.columns) == list(source.columns) and len(rows) == 40
    numeric = source.columns[:-1]
    assert (rows[numeric].dtypes == source[numeric].dtypes).all()
    assert set(rows["target"]) <= {"setosa", "versicolor", "virginica"}
    assert ((rows[numeric] >= source[numeric].min()) & (rows[numeric] <= source[numeric].max())).all().all()


def test_eval_of_a_table_run_measures_the_decoded_rows(runs, tmp_path, capsys):
    import json
    import shutil

    from genlab.metrics.tabular import quality_report

    run = tmp_path / "iris"
    shutil.copytree(runs["iris"], run)
    assert main(["eval", str(run), "-n", "150"]) == 0
    out = capsys.readouterr().out
    assert "as a table" in out and "efficacy for 'target'" in out and "exact copies" in out
    table = json.loads((run / "eval.json").read_text())["table"]
    assert (run / "eval_columns.png").is_file() and (run / "eval_pairs.png").is_file()
    # the numbers are those of the rows `genlab sample` writes with the same seed, against the training rows
    assert main(["sample", str(run), "-n", "150", "--seed", "0", "--out", str(tmp_path / "rows.csv")]) == 0
    rows, train = pd.read_csv(tmp_path / "rows.csv"), genlab.data.load("iris").split("train").frame
    assert table["column_shapes"] == pytest.approx(quality_report(train, rows).column_shapes, abs=1e-9)
    assert 0 <= table["detection_auc"] <= 1 and "tstr_accuracy" in table and "holdout_quality" in table
    one_line_error(capsys, ["eval", str(run), "--target", "colour"], "--target 'colour' is not a column of the table")


def test_an_untrained_diffusion_table_decodes_inside_the_data_range(runs, tmp_path):
    source = genlab.data.load("wine").frame
    assert main(["sample", str(runs["wine"]), "-n", "50", "--steps", "3", "--out", str(tmp_path / "wine.csv")]) == 0
    rows = pd.read_csv(tmp_path / "wine.csv")
    numeric = source.columns[:-1]
    low, high = source[numeric].min(), source[numeric].max()
    assert ((rows[numeric] >= low) & (rows[numeric] <= high)).all().all()
    # 3 steps of a 3-step-trained model overshoot: some values sit on the clip bounds
    assert ((rows[numeric] == low) | (rows[numeric] == high)).to_numpy().any()
    assert set(rows["target"]) <= {"class_0", "class_1", "class_2"}


def test_a_csv_table_keeps_its_integer_and_text_columns(tmp_path):
    rng = np.random.default_rng(0)
    source = pd.DataFrame({"age": rng.integers(18, 90, 120), "income": rng.lognormal(10, 1, 120).round(2),
                           "colour": rng.choice(["red", "green", "blue"], 120)})  # fmt: skip
    source.to_csv(tmp_path / "people.csv", index=False)
    run = train(tmp_path / "run", "vae", tmp_path / "people.csv", 3, "latent_dim=2", "hidden=16")
    assert (run / "table_encoder.json").is_file()
    assert main(["sample", str(run), "-n", "30", "--seed", "1", "--out", str(tmp_path / "a.csv")]) == 0
    rows, original = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "people.csv")
    assert list(rows.columns) == list(original.columns) and list(rows.dtypes) == list(original.dtypes)  # int64, float64, object
    assert rows["age"].between(original["age"].min(), original["age"].max()).all()
    assert set(rows["colour"]) <= {"red", "green", "blue"}
    # a run without the encoder file (older runs) refits it on the data its config names: the same rows
    (run / "table_encoder.json").unlink()
    assert main(["sample", str(run), "-n", "30", "--seed", "1", "--out", str(tmp_path / "b.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b.csv"), rows)


def test_a_malformed_encoder_file_is_refused_in_one_line(runs, tmp_path, capsys):
    import shutil

    run = tmp_path / "iris"
    shutil.copytree(runs["iris"], run)
    (run / "table_encoder.json").write_text('{"columns": [{"name": "x", "kind": "numeric", "start": 0, "stop": 1, "dtype": "__import__"}]}')
    one_line_error(capsys, ["sample", str(run), "--out", str(tmp_path / "x.csv")], "table encoder column 0 is malformed")
    (run / "table_encoder.json").write_text("{not json")
    one_line_error(capsys, ["sample", str(run), "--out", str(tmp_path / "x.csv")], "is not valid JSON")


# -- train --help, --threads, tensorboard ----------------------------------------------------------------
def help_text(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main(["train", *argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_train_help_shows_the_models_fields_and_training_defaults(capsys):
    from genlab.models.latent.vae import VAEConfig

    generic = " ".join(help_text(capsys).split())
    assert "--max-steps MAX_STEPS (default: 2000)" in generic and "model fields" not in generic
    vae = help_text(capsys, "vae")
    assert "--max-steps MAX_STEPS (default: 6000)" in " ".join(vae.split()) and "(default: cosine)" in vae
    assert f"  latent_dim={VAEConfig().latent_dim} " in vae and "size D of the latent z" in vae
    assert all(f"  {f.name}=" in vae for f in dataclasses.fields(VAEConfig))
    wgan = " ".join(help_text(capsys, "wgan-gp").split())
    assert "--max-steps MAX_STEPS (default: 15000)" in wgan and "n_critic=none (5) discriminator steps per generator step" in wgan
    on_vectors = " ".join(help_text(capsys, "wgan-gp", "--data", "8gaussians").split())
    assert "--max-steps MAX_STEPS (default: 20000)" in on_vectors and "defaults of wgan-gp on 8gaussians" in on_vectors
    assert "unknown model 'nosuch'" in help_text(capsys, "nosuch")


def test_threads_after_the_command(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    assert main(["list", "--threads", "1"]) == 0 and main(["--threads", "2", "list"]) == 0 and calls == [1, 2]
    parser = build_parser()
    assert parser.parse_args(["train", "vae", "--threads", "3"]).threads == 3
    assert parser.parse_args(["--threads", "4", "train", "vae"]).threads == 4
    assert parser.parse_args(["train", "vae"]).threads is None
    assert main(["sample", "run", "--threads", "0"]) == 2


def test_tensorboard_follows_what_is_installed(tmp_path, monkeypatch, capsys):
    from genlab.train import TrainConfig

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else found(name, *a))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` of it fails, as without the package
    assert TrainConfig().tensorboard is False
    common = ["train", "vae", "--set", "latent_dim=2", "--set", "hidden=16", "--max-steps", "2", "--no-progress", "--sample-every", "0"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert "genlab[tensorboard]" not in capsys.readouterr().out  # not asked for: nothing said
    assert main([*common, "--out", str(tmp_path / "b"), "--tensorboard"]) == 0  # asked for: said once, and trained
    notes = [line for line in capsys.readouterr().out.splitlines() if "genlab[tensorboard]" in line]
    assert notes == ["note: tensorboard=True (--tensorboard) needs the tensorboard package (pip install genlab[tensorboard]); "
                     "training goes on without it"]
    assert (tmp_path / "b" / "model.safetensors").is_file()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "tensorboard" else found(name, *a))
    assert TrainConfig().tensorboard is True
