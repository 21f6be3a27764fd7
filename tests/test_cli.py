"""The command line: every command end to end on tiny runs, and one-line errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from genlab.cli.main import main

TINY = ["--max-steps", "30", "--batch-size", "64", "--log-every", "10", "--no-progress", "--no-tensorboard"]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "vae", "--data", "digits", "--set", "latent_dim=4", "--set", "hidden=32,32", "--out", str(out), *TINY]) == 0
    return out


def test_list_names_models_and_datasets(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "vae" in text and "digits" in text and "8gaussians" in text and "test-gaussian" not in text


def test_train_writes_the_run_and_says_where(vae_run, capsys):
    cfg = (vae_run / "config.yaml").read_text()
    assert "latent_dim: 4" in cfg and "max_steps: 30" in cfg
    grid = Image.open(vae_run / "samples.png")
    assert grid.mode == "L" and grid.size[0] >= 256
    rows = [json.loads(line) for line in (vae_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [10, 20, 30]


def test_train_resume_continues_from_the_checkpoint(vae_run, tmp_path, capsys):
    out = tmp_path / "r"
    common = ["train", "vae", "--data", "digits", "--set", "latent_dim=4", "--out", str(out), "--no-progress", "--no-tensorboard", "--log-every", "10"]
    assert main([*common, "--max-steps", "10"]) == 0
    assert main([*common, "--max-steps", "20"]) == 2  # refuses to overwrite
    assert "already holds a run" in capsys.readouterr().err
    assert main([*common, "--max-steps", "20", "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 20


def test_the_same_seed_trains_the_same_weights_and_threads_are_set(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    common = ["train", "vae", "--data", "digits", "--set", "latent_dim=4", "--set", "hidden=16", "--max-steps", "3",
              "--no-progress", "--no-tensorboard", "--sample-every", "0"]  # fmt: skip
    for i, (name, seed) in enumerate((("a", "5"), ("b", "5"), ("c", "6"))):
        torch.manual_seed(1000 + i)  # whatever the global generator held before must not matter
        assert main(["--threads", "1", *common, "--seed", seed, "--out", str(tmp_path / name)]) == 0
    assert calls == [1, 1, 1]
    weights = {name: load_file(tmp_path / name / "model.safetensors") for name in "abc"}
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])


def test_sample_writes_a_grid_and_tensors(vae_run, tmp_path, capsys):
    assert main(["sample", str(vae_run), "-n", "16", "--out", str(tmp_path / "grid.png")]) == 0
    assert Image.open(tmp_path / "grid.png").size[0] >= 256
    assert main(["sample", str(vae_run), "-n", "5", "--out", str(tmp_path / "x.npy"), "--seed", "3"]) == 0
    assert main(["sample", str(vae_run), "-n", "5", "--out", str(tmp_path / "y.npy"), "--seed", "3"]) == 0
    x, y = np.load(tmp_path / "x.npy"), np.load(tmp_path / "y.npy")
    assert x.shape == (5, 1, 8, 8) and np.array_equal(x, y) and 0 <= x.min() and x.max() <= 1


def test_eval_reports_metrics_and_the_baseline(vae_run, capsys):
    assert main(["eval", str(vae_run), "--baseline", "gmm"]) == 0
    text = capsys.readouterr().out
    assert "fid" in text and "gmm" in text
    report = json.loads((vae_run / "eval.json").read_text())
    for who in ("model", "gmm"):
        assert {"fid", "kid", "precision", "recall"} <= set(report[who])
        assert report[who]["fid"] > 0 and 0 <= report[who]["precision"] <= 1
    assert report["model"]["cross_entropy_bound_nats"] > 0  # Bernoulli on grey levels: no likelihood, no bits/dim
    assert not any(k.startswith("nll") for k in report["model"])


def test_info_lists_config_metrics_and_pictures(vae_run, capsys):
    assert main(["info", str(vae_run)]) == 0
    text = capsys.readouterr().out
    assert "vae" in text and "step     30 of 30" in text and "samples.png" in text and "curves.png" in text


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "nosuchmodel", "--data", "digits"], "unknown model 'nosuchmodel'"),
        (["train", "vae", "--data", "nosuchdata"], "nosuchdata"),
        (["train", "vae", "--set", "latent_dim=abc", "--max-steps", "1"], "latent_dim"),
        (["train", "vae", "--set", "latentdim=3", "--max-steps", "1"], "no field 'latentdim'"),
        (["train", "vae", "--set", "likelihood=poisson", "--max-steps", "1"], "likelihood"),
        (["train", "vae", "--precision", "fp8", "--max-steps", "1"], "precision"),
        (["sample", "/nonexistent/run"], "no run directory"),
        (["eval", "/nonexistent/run"], "no run directory"),
        (["info", "/nonexistent/run"], "no run directory"),
    ],
)
def test_bad_input_gives_a_one_line_reason(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_the_installed_command_runs_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "genlab", "train", "nosuchmodel"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "known models" in done.stderr
    helped = subprocess.run([sys.executable, "-m", "genlab", "train", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--max-steps" in helped.stdout and "--set" in helped.stdout
