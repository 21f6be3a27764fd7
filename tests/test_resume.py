"""Resume and divergence tell the truth: options honoured or refused (never silently dropped),
config.yaml records only what took effect, missing pictures are written, and the recovery a
diverged run names works."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

import genlab
from genlab.cli.main import main
from genlab.errors import ConfigError, RunError, TrainingError
from genlab.files import read_jsonl

sys.path.insert(0, str(Path(__file__).parent))
from engine_models import gaussian_data  # noqa: E402

FAST = dict(batch_size=32, lr=0.05, log_every=5, progress=False, tensorboard=False, sample_every=0, num_samples=16)
CLI = ["--batch-size", "32", "--log-every", "2", "--sample-every", "0", "--no-progress", "--no-tensorboard"]
VAE = ["--set", "latent_dim=2", "--set", "hidden=8"]


def make():
    torch.manual_seed(0)
    return genlab.create("test-gaussian", data=gaussian_data())


def saved_train(out):
    return yaml.safe_load((Path(out) / "config.yaml").read_text())["train"]



def test_a_new_learning_rate_on_resume_is_used_and_recorded(tmp_path):
    genlab.fit(make(), gaussian_data(), out=tmp_path / "r", max_steps=10, **FAST)
    run = genlab.fit(make(), gaussian_data(), out=tmp_path / "r", resume=True, max_steps=20, **{**FAST, "lr": 0.001})
    engine_lrs = [r["lr"] for r in run.history if r["split"] == "train" and r["step"] > 10]
    assert engine_lrs and all(lr == pytest.approx(0.001) for lr in engine_lrs)  # the optimizer stepped at the new rate
    assert saved_train(tmp_path / "r")["lr"] == 0.001
    state = torch.load(tmp_path / "r" / "state.pt", weights_only=True)
    assert state["train_lr"] == 0.001 and state["optimizers"]["model"]["param_groups"][0]["lr"] == pytest.approx(0.001)


def test_a_schedule_on_resume_is_evaluated_at_the_checkpoint_step(tmp_path):
    genlab.fit(make(), gaussian_data(), out=tmp_path / "r", max_steps=10, **FAST)
    run = genlab.fit(make(), gaussian_data(), out=tmp_path / "r", resume=True, max_steps=20, lr_schedule="linear", **FAST)
    rows = {r["step"]: r["lr"] for r in run.history if r["split"] == "train"}
    # linear decay over 20 steps: after 15 scheduler steps the factor is 1 - 15/20
    assert rows[15] == pytest.approx(0.05 * (1 - 15 / 20))


def test_resume_refuses_fewer_steps_than_done_and_records_nothing(tmp_path):
    genlab.fit(make(), gaussian_data(), out=tmp_path / "r", max_steps=10, **FAST)
    before = (tmp_path / "r" / "config.yaml").read_text()
    with pytest.raises(ConfigError, match="at step 10 already"):
        genlab.fit(make(), gaussian_data(), out=tmp_path / "r", resume=True, max_steps=5, **FAST)
    assert (tmp_path / "r" / "config.yaml").read_text() == before


@pytest.mark.parametrize("option, value, reason", [
    ("batch_size", 16, "data order"), ("seed", 3, "random streams"), ("weight_decay", 0.1, "weight decay"), ("ema_decay", 0.0, "EMA"),
])  # fmt: skip
def test_resume_refuses_options_it_cannot_honour_with_the_reason(tmp_path, option, value, reason):
    genlab.fit(make(), gaussian_data(), out=tmp_path / "r", max_steps=10, **FAST)
    with pytest.raises(ConfigError, match=f"{option}={value}.*{reason}"):
        genlab.fit(make(), gaussian_data(), out=tmp_path / "r", resume=True, max_steps=20, **{**FAST, option: value})
    assert saved_train(tmp_path / "r")[option] != value


def test_resume_refuses_other_data_and_another_split(tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["train", "vae", "--data", "8gaussians", "--out", str(out), "--max-steps", "4", *CLI, *VAE]) == 0
    before = (out / "config.yaml").read_text()
    assert main(["train", "vae", "--out", str(out), "--resume", "--max-steps", "6", "--data-option", "seed=5", *CLI]) == 2
    assert "another dataset or split" in capsys.readouterr().err
    assert main(["train", "vae", "--out", str(out), "--resume", "--max-steps", "6", "--data", "moons", *CLI]) == 2
    assert "moons" in capsys.readouterr().err
    assert (out / "config.yaml").read_text() == before
    # without --data, the run's own data: no need to repeat it
    assert main(["train", "vae", "--out", str(out), "--resume", "--max-steps", "6", *CLI]) == 0
    assert saved_train(out)["max_steps"] == 6


def test_resume_as_another_model_names_the_model_mismatch(tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["train", "vae", "--data", "8gaussians", "--out", str(out), "--max-steps", "2", *CLI, *VAE]) == 0
    assert main(["train", "ddpm", "--out", str(out), "--resume", "--max-steps", "4", *CLI]) == 2
    err = capsys.readouterr().err
    assert "as ddpm: it trained vae" in err and "no field" not in err


def test_resume_after_a_kill_before_the_final_pictures_writes_them(tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["train", "vae", "--data", "8gaussians", "--out", str(out), "--max-steps", "4", *CLI, *VAE]) == 0
    (out / "samples.png").unlink()  # what a kill between the final checkpoint and the pictures leaves
    assert main(["train", "vae", "--out", str(out), "--resume", *CLI]) == 0
    assert (out / "samples.png").is_file() and "samples.png" in capsys.readouterr().out


def test_a_diverged_run_keeps_its_last_good_checkpoint_and_the_named_recovery_works(tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["train", "realnvp", "--data", "8gaussians", "--out", str(out), "--max-steps", "10", "--checkpoint-every", "5", *CLI]) == 0
    good = (out / "model.safetensors").read_bytes()
    # the same run resumed at a learning rate that blows it up (its scales overflow), checkpointing every step
    assert main(["train", "realnvp", "--out", str(out), "--resume", "--max-steps", "40", "--lr", "1e6", "--checkpoint-every", "1", *CLI]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "last good checkpoint" in err and "(step 10)" in err
    assert (out / "model.safetensors").read_bytes() == good  # nothing non-finite replaced it
    assert saved_train(out)["lr"] != 1e6  # config.yaml does not record what never took effect

    command = re.search(r"genlab train (.+?) \(Python", err).group(1).split()
    assert "--resume" in command and "--grad-clip" in command
    assert main(["train", *command, "--max-steps", "30", *CLI]) == 0
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "train"]
    assert rows[-1]["step"] == 30 and all(math.isfinite(r["loss"]) for r in rows)
    assert torch.isfinite(genlab.load(out).sample(100)).all()


def test_nan_before_any_checkpoint_names_a_restart_that_works(tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["train", "vae", "--data", "8gaussians", "--out", str(out), "--max-steps", "30", "--lr", "1e6", "--checkpoint-every", "1", *CLI, *VAE]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint was written yet" in err
    lr, clip = re.search(r"--lr (\S+) --grad-clip (\S+)", err).groups()
    assert float(lr) <= 2e-3
    assert main(["train", "vae", "--data", "8gaussians", "--out", str(out), "--max-steps", "30", "--lr", lr, "--grad-clip", clip, *CLI, *VAE]) == 0


def test_a_diverging_loss_is_warned_in_the_log(tmp_path):
    out = tmp_path / "v"
    assert main(["train", "vae", "--data", "8gaussians", "--out", str(out), "--max-steps", "100", "--lr", "30", "--warmup-steps", "200",
                 "--lr-schedule", "constant", *CLI, *VAE]) == 0  # fmt: skip
    log = (out / "warnings.log").read_text()
    assert "the loss grew from" in log and "diverging" in log and len(log.splitlines()) <= 3


def test_a_healthy_run_warns_of_no_divergence(tmp_path):
    run = genlab.fit(make(), gaussian_data(), out=tmp_path / "r", max_steps=60, **FAST)
    assert run.step == 60 and not (tmp_path / "r" / "warnings.log").exists()


def test_a_run_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunError, match="is a file"):
        genlab.fit(make(), gaussian_data(), out=tmp_path / "f", max_steps=2, **FAST)
