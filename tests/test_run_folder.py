"""A run folder is untrusted input: no pickle runs, damage is one clear error, crash leftovers go.

Each case damages one file of a real run (a tiny VAE on 8gaussians, trained once) and checks both
the Python API (a RunError, catchable as ValueError, with the file named) and the CLI (exit 2, one
line on stderr, no traceback).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import genlab
from genlab.cli.main import main
from genlab.errors import GenlabError, RunError
from genlab.files import atomic_write, read_jsonl, remove_stale_temporaries

TINY = ["--max-steps", "6", "--batch-size", "32", "--log-every", "2", "--checkpoint-every", "3", "--sample-every", "0",
        "--no-progress", "--no-tensorboard", "--set", "latent_dim=2", "--set", "hidden=8"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "vae", "--data", "8gaussians", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


class Payload:
    """Unpickling this calls open(path, "w"): a file appears if pickle code runs."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_payload_in_state_pt_does_not_run(run, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    state = torch.load(run / "state.pt", weights_only=True)
    state["sampler"] = Payload(marker)
    torch.save(state, run / "state.pt")
    with pytest.raises(RunError, match="objects other than tensors"):
        genlab.fit(genlab.create("vae", data=genlab.data.load("8gaussians"), latent_dim=2, hidden=(8,)),
                   genlab.data.load("8gaussians"), out=run, resume=True, max_steps=9, progress=False)  # fmt: skip
    assert main(["train", "vae", "--out", str(run), "--resume", "--max-steps", "9", "--no-progress"]) == 2
    assert "state.pt" in one_error_line(capsys)
    assert not marker.exists()


def test_every_checkpoint_genlab_writes_loads_without_pickle(trained):
    state = torch.load(trained / "state.pt", weights_only=True)
    assert state["step"] == 6 and set(state["optimizers"]) == {"model"}


def garbage(path: Path, seed: int = 0) -> None:
    path.write_bytes(random.Random(seed).randbytes(300))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def other_shape_weights(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    name = next(k for k, v in state.items() if v.dim() == 2)
    state[name] = torch.zeros(state[name].shape[0] + 1, state[name].shape[1])
    save_file(state, str(path))


DAMAGE = {
    "weights random bytes": ("model.safetensors", garbage, "model.safetensors is damaged"),
    "weights truncated": ("model.safetensors", truncate, "model.safetensors is damaged"),
    "ema random bytes": ("ema.safetensors", garbage, "ema.safetensors is damaged"),
    "ema truncated": ("ema.safetensors", truncate, "ema.safetensors is damaged"),
    "weights of another shape": ("ema.safetensors", other_shape_weights, "another model or shape"),
    "config garbage": ("config.yaml", lambda p: p.write_text("model: [unclosed\n  : {{\n"), "not valid YAML"),
    "config random bytes": ("config.yaml", garbage, "config.yaml"),
    "config a list": ("config.yaml", lambda p: p.write_text("- a\n- b\n"), "holds list"),
    "config empty": ("config.yaml", lambda p: p.write_text(""), "holds nothing"),
    "config without model_config": ("config.yaml", lambda p: p.write_text("model: vae\ndata: {}\n"), "'model_config'"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_run_is_one_clear_error(run, case, capsys):
    name, damage, message = DAMAGE[case]
    damage(run / name)
    ema = name != "model.safetensors"  # the trained weights are read when the EMA copy is not wanted
    with pytest.raises(RunError, match=message) as info:
        genlab.load(run, ema=ema)
    assert isinstance(info.value, ValueError) and name in str(info.value)
    assert main(["sample", str(run), "-n", "4", "--out", str(run / "s.png"), *([] if ema else ["--no-ema"])]) == 2
    assert name in one_error_line(capsys)


@pytest.mark.parametrize("damage", [truncate, garbage], ids=["truncated", "random bytes"])
def test_a_damaged_state_pt_is_one_clear_error_on_resume(run, damage, capsys):
    damage(run / "state.pt")
    assert main(["train", "vae", "--out", str(run), "--resume", "--max-steps", "9", "--no-progress"]) == 2
    assert "state.pt is damaged" in one_error_line(capsys), "a damaged file is not called a payload"
    assert genlab.load(run).sample(3).shape == (3, 2)  # the weights themselves are still usable


def test_any_random_bytes_as_state_pt_are_one_run_error(tmp_path):
    from genlab.train.checkpoint import load_state

    for seed in range(40):  # random bytes fail inside the unpickler in many different ways
        garbage(tmp_path / "state.pt", seed)
        with pytest.raises(RunError, match="state.pt is damaged"):
            load_state(tmp_path / "state.pt")


def test_a_torn_last_metrics_line_is_tolerated_and_resume_goes_on(run, capsys):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "split": "tr')  # a run killed mid-line
    assert main(["info", str(run)]) == 0
    assert "step     6 of 6" in capsys.readouterr().out
    assert main(["train", "vae", "--out", str(run), "--resume", "--max-steps", "8", "--no-progress"]) == 0
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4, 6, 8]


def test_a_damaged_metrics_line_in_the_middle_is_named(run, capsys):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = "not json"
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["info", str(run)]) == 2
    assert "line 2 of" in one_error_line(capsys)


def test_stale_temporaries_of_killed_writers_are_removed_on_start_and_resume(run, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has ended
    stale = [run / f".state.pt.{pid}.0123abcd.tmp", run / f".model.safetensors.{pid}.89abcdef.tmp", run / "samples" / f".x.png.{pid}.00000000.tmp"]
    live = run / f".ema.safetensors.{os.getppid()}.fedcba98.tmp"  # its writer (our parent) still runs
    for p in [*stale, live]:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"half")
    (run / "notes.tmp").write_text("mine")  # not a genlab temporary: kept
    assert main(["train", "vae", "--out", str(run), "--resume", "--max-steps", "7", "--no-progress"]) == 0
    assert not any(p.exists() for p in stale) and live.exists() and (run / "notes.tmp").exists()
    assert remove_stale_temporaries(tmp_path / "nothing-here") == []


def test_atomic_write_leaves_no_temporary_when_the_writer_fails(tmp_path):
    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(tmp_path / "a.bin", fail)
    assert list(tmp_path.iterdir()) == []


def test_run_errors_are_catchable_as_the_builtin_types(tmp_path):
    with pytest.raises(FileNotFoundError):
        genlab.load(tmp_path / "nothing")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.yaml").write_text("[1, 2")
    with pytest.raises(ValueError):
        genlab.load(tmp_path / "x")
    with pytest.raises(GenlabError):
        genlab.load(tmp_path / "x")
