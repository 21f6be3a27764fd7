"""benchmarks/reproduce.py in --quick mode on the digits: it trains and evaluates through the CLI,
records the times and the eval report, reuses a finished run, and names each likelihood in its unit."""

from __future__ import annotations

import json
import math

import pytest


@pytest.fixture
def script(repo_script):
    return repo_script("benchmarks/reproduce.py")


def test_quick_run_trains_evaluates_and_reuses_the_run(tmp_path, script):
    argv = ["--data", "digits", "--models", "glow", "--quick", "--threads", "1", "--out", str(tmp_path / "runs")]
    payload = script.main([*argv, "--json", str(tmp_path / "r.json")])

    (row,) = payload["rows"]
    assert "error" not in row, row
    assert row["train"]["wall_s"] > 0 and row["train"]["cpu_s"] > 0 and row["eval"]["wall_s"] > 0
    assert row["config"]["model"] == "glow" and row["config"]["train"]["max_steps"] == 3
    assert row["n_fake"] == 50 and row["n_real"] == 180
    metrics = row["metrics"]
    assert math.isfinite(metrics["fid"]) and 0.0 <= metrics["precision"] <= 1.0
    # a flow's exact likelihood of 8x8 digits with 17 levels: positive and below 8 bits of raw bytes
    assert 0.0 < metrics["nll_bits_per_dim"] < 8.0
    assert "50 vs 180 test" in payload["table"] and "bits/dim" in payload["table"] and json.loads((tmp_path / "r.json").read_text())["rows"][0]["model"] == "glow"

    # a second call keeps the finished run's training and its recorded times
    again = script.main([*argv, "--reuse-eval"])
    assert again["rows"][0]["train"] == row["train"] and "eval" not in again["rows"][0]
    commands = [line for line in (tmp_path / "runs" / "glow-digits.log").read_text().splitlines() if line.startswith("$ ")]
    assert [" train glow " in c for c in commands] == [True, False] and " eval " in commands[1]

    # --retrain replaces the finished run (genlab train refuses a folder that holds one)
    retrained = script.main([*argv, "--retrain"])["rows"][0]
    assert "error" not in retrained, retrained
    assert retrained["train"]["wall_s"] != row["train"]["wall_s"]
    commands = [line for line in (tmp_path / "runs" / "glow-digits.log").read_text().splitlines() if line.startswith("$ ")]
    assert [" train glow " in c for c in commands] == [True, False, True, False]


def test_likelihood_column_names_the_unit(script):
    assert script.likelihood({"fid": 3.0, "nll_bits_per_dim": 1.2}) == (1.2, "bits/dim")
    assert script.likelihood({"nll_bound_bits_per_dim": 1.5, "nll_bound_nats": 900.0}) == (1.5, "bits/dim (bound)")
    assert script.likelihood({"code_length_bits_per_image": 40.0}) == (40.0, "prior bits/image")
    assert script.likelihood({"cross_entropy_bound_nats": 80.0}) == (80.0, "nats (cross-entropy bound)")
    assert script.likelihood({"fid": 3.0}) == (None, "")
    with pytest.raises(SystemExit, match="MODEL=N"):
        script.parse_n_for(["pixelcnn"])


def test_real_reference_row_compares_real_images_the_split_does_not_hold(tmp_path, script):
    """Real training digits in place of samples score like a near-perfect model (precision and
    recall near 1 in the same features); against the train split the stand-ins are the other
    splits' images."""
    argv = ["--data", "digits", "--models", "", "--quick", "--threads", "1", "--out", str(tmp_path / "runs"), "--real-reference"]
    (row,) = script.main(argv)["rows"]
    assert row["model"] == "real train" and row["n_fake"] == 50 and row["n_real"] == 180 and row["split"] == "test"
    assert row["metrics"]["precision"] > 0.8 and row["metrics"]["recall"] > 0.8
    (train_row,) = script.main([*argv, "--split", "train"])["rows"]
    assert train_row["model"] == "real val+test" and train_row["split"] == "train" and train_row["n_real"] > 1000
