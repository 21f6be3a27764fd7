"""Every bad input a user can give: a non-zero exit (or a GenlabError in Python), no traceback, and a
message that names what was wrong. One table for the CLI and one for the Python API; each row
names its input, the words the message must hold, and (Python) the built-in type it stays
catchable as.

Runs used by the rows are trained once per module on digits: a VAE, a DDPM (UNet), a latent
diffusion model on that VAE, and a copy of the VAE whose weights are NaN.
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import genlab
from genlab.cli.main import main
from genlab.errors import GenlabError
from genlab.models.diffusion.guidance import load_classifier

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = ["--no-progress", "--no-tensorboard", "--sample-every", "0"]
TINY = ["--max-steps", "3", "--batch-size", "32", *QUIET]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    vae, ddpm, ldm = root / "vae", root / "ddpm", root / "ldm"
    assert main(["train", "vae", "--data", "digits", "--set", "latent_dim=4", "--set", "hidden=16", "--out", str(vae), *TINY]) == 0
    assert main(["train", "ddpm", "--data", "digits", "--set", "steps=50", "--out", str(ddpm), *TINY]) == 0
    assert main(["train", "latent-diffusion", "--data", "digits", "--set", f"autoencoder={vae}", "--set", "steps=50",
                 "--out", str(ldm), *TINY]) == 0  # fmt: skip
    nan = root / "nan"
    shutil.copytree(vae, nan)
    from safetensors.torch import load_file, save_file

    for name in ("model.safetensors", "ema.safetensors"):
        state = load_file(str(nan / name))
        save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}, str(nan / name))
    files = root / "files"
    files.mkdir()
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(files / "image.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(files / "mask.png")
    (files / "random.bin").write_bytes(random.Random(0).randbytes(500))
    (files / "random.png").write_bytes(random.Random(1).randbytes(500))
    (files / "random.safetensors").write_bytes(random.Random(2).randbytes(500))
    (files / "random.pth").write_bytes(random.Random(3).randbytes(500))
    (files / "afile").write_text("not a folder")
    (files / "empty").mkdir()
    (files / "one_row.csv").write_text("a,b\n1,2\n")
    np.save(files / "one_row.npy", np.zeros((1, 3), np.float32))
    (files / "bad.csv").write_bytes(b"\x00\xff\xfe garbage \x00")
    return {"vae": vae, "ddpm": ddpm, "ldm": ldm, "nan": nan, "files": files, "root": root}


def fill(argv, runs, tmp_path):
    """The row's words with {vae}, {ddpm}, {files}, {tmp} ... replaced by the module's paths."""
    names = {**{k: str(v) for k, v in runs.items()}, "tmp": str(tmp_path)}
    return [word.format(**names) for word in argv]


T = "train"
CLI_CASES = [
    # (id, argv, words the error must hold)
    ("unknown model", [T, "nosuch"], "unknown model 'nosuch'"),
    ("model for other data", [T, "pixelcnn", "--data", "8gaussians", *TINY], "built for image"),
    ("set inf int", [T, "vae", "--set", "latent_dim=inf", *TINY], "latent_dim='inf' must be a finite number"),
    ("set word int", [T, "vae", "--set", "latent_dim=abc", *TINY], "latent_dim='abc' must be an integer"),
    ("set negative", [T, "vae", "--set", "latent_dim=-3", *TINY], "latent_dim"),
    ("set nan float", [T, "vae", "--set", "beta=nan", *TINY], "beta='nan' must be a finite number"),
    ("set unknown field", [T, "vae", "--set", "nosuch=1", *TINY], "has no field 'nosuch'"),
    ("set without =", [T, "vae", "--set", "latent_dim", *TINY], "--set 'latent_dim' must look like key=value"),
    ("set bad choice", [T, "vae", "--set", "likelihood=poisson", *TINY], "likelihood='poisson' is not allowed"),
    ("set bad bool", [T, "ddpm", "--set", "class_conditional=maybe", *TINY], "class_conditional='maybe' is not a boolean"),
    ("max-steps inf", [T, "vae", "--max-steps", "inf", *QUIET], "max_steps='inf' must be a finite number"),
    ("max-steps zero", [T, "vae", "--max-steps", "0", *QUIET], "max_steps=0 must be > 0"),
    ("max-steps negative", [T, "vae", "--max-steps", "-5", *QUIET], "max_steps=-5 must be > 0"),
    ("max-steps fraction", [T, "vae", "--max-steps", "1.5", *QUIET], "max_steps='1.5' must be an integer"),
    ("batch-size zero", [T, "vae", "--batch-size", "0", "--max-steps", "2", *QUIET], "batch_size=0 must be > 0"),
    ("lr negative", [T, "vae", "--lr", "-1", *TINY], "lr=-1.0 must be > 0"),
    ("lr word", [T, "vae", "--lr", "fast", *TINY], "lr='fast' must be a number"),
    ("seed word", [T, "vae", "--seed", "abc", *TINY], "seed='abc' must be an integer"),
    ("seed fraction", [T, "vae", "--seed", "1.5", *TINY], "seed='1.5' must be an integer"),
    ("schedule unknown", [T, "vae", "--lr-schedule", "nosuch", *TINY], "lr_schedule='nosuch' is not allowed"),
    ("precision unknown", [T, "vae", "--precision", "fp8", *TINY], "precision='fp8' is not allowed"),
    ("ema-decay above 1", [T, "vae", "--ema-decay", "2", *TINY], "ema_decay=2.0 must lie in"),
    ("grad-accum zero", [T, "vae", "--grad-accum", "0", *TINY], "grad_accum=0 must be > 0"),
    ("accum not dividing", [T, "vae", "--batch-size", "10", "--grad-accum", "3", "--max-steps", "2", *QUIET], "not divisible by grad_accum=3"),
    ("warmup negative", [T, "vae", "--warmup-steps", "-1", *TINY], "warmup_steps=-1 must be >= 0"),
    ("device cuda on cpu", [T, "vae", "--device", "cuda", "--out", "{tmp}/r", *TINY], "no CUDA GPU"),
    ("device unknown", [T, "vae", "--device", "nosuchdev", "--out", "{tmp}/r", *TINY], "unknown device 'nosuchdev'"),
    ("device cuda index", [T, "vae", "--device", "cuda:7", "--out", "{tmp}/r", *TINY], "no CUDA GPU"),
    ("data unknown", [T, "vae", "--data", "nosuch", *TINY], "unknown dataset 'nosuch'"),
    ("data missing path", [T, "vae", "--data", "/no/such/folder", *TINY], "no file or folder at '/no/such/folder'"),
    ("data-option without =", [T, "vae", "--data-option", "resize", *TINY], "--data-option 'resize' must look like key=value"),
    ("data-option unknown", [T, "vae", "--data-option", "nosuch=1", *TINY], "nosuch"),
    ("data one-row csv", [T, "vae", "--data", "{files}/one_row.csv", "--out", "{tmp}/r", *TINY], "1 sample, too few to split"),
    ("data one-row npy", [T, "vae", "--data", "{files}/one_row.npy", "--out", "{tmp}/r", *TINY], "its val and test splits are empty"),
    ("data garbage csv", [T, "vae", "--data", "{files}/bad.csv", "--out", "{tmp}/r", *TINY], "bad.csv"),
    ("out is a file", [T, "vae", "--out", "{files}/afile", *TINY], "is a file, not a folder"),
    ("out holds a run", [T, "vae", "--out", "{vae}", *TINY], "already holds a run"),
    ("resume without out", [T, "vae", "--resume", *TINY], "--resume needs --out"),
    ("resume empty folder", [T, "vae", "--resume", "--out", "{files}/empty", *TINY], "not a genlab run"),
    ("resume missing folder", [T, "vae", "--resume", "--out", "{tmp}/none", *TINY], "no run directory"),
    ("resume other data", [T, "vae", "--resume", "--out", "{vae}", "--data", "8gaussians", "--max-steps", "5", *QUIET], "8gaussians"),
    ("resume other split", [T, "vae", "--resume", "--out", "{vae}", "--data-option", "seed=5", "--max-steps", "5", *QUIET], "another dataset or split"),
    ("resume other model", [T, "ddpm", "--resume", "--out", "{vae}", "--max-steps", "5", *QUIET], "as ddpm: it trained vae"),
    ("resume fewer steps", [T, "vae", "--resume", "--out", "{vae}", "--max-steps", "1", *QUIET], "at step 3 already"),
    ("resume new batch size", [T, "vae", "--resume", "--out", "{vae}", "--max-steps", "5", "--batch-size", "16", *QUIET], "batch_size=16"),
    ("resume new seed", [T, "vae", "--resume", "--out", "{vae}", "--max-steps", "5", "--seed", "9", *QUIET], "seed=9"),
    ("sample n zero", ["sample", "{vae}", "-n", "0", "--out", "{tmp}/s.png"], "n=0 must be a positive number"),
    ("sample n negative", ["sample", "{vae}", "-n", "-3", "--out", "{tmp}/s.png"], "n=-3 must be a positive number"),
    ("sample n word", ["sample", "{vae}", "-n", "many"], "invalid int value: 'many'"),
    ("sample device cuda", ["sample", "{vae}", "--device", "cuda", "--out", "{tmp}/s.png"], "no CUDA GPU"),
    ("sample device unknown", ["sample", "{vae}", "--device", "nosuchdev", "--out", "{tmp}/s.png"], "unknown device 'nosuchdev'"),
    ("sample missing run", ["sample", "{tmp}/none"], "no run directory"),
    ("sample run is a file", ["sample", "{files}/afile"], "no run directory"),
    ("sample empty folder", ["sample", "{files}/empty"], "not a genlab run"),
    ("sample csv of images", ["sample", "{vae}", "--out", "{tmp}/rows.csv"], "a .csv holds table rows"),
    ("sample unknown suffix", ["sample", "{vae}", "--out", "{tmp}/s.xyz"], "'.xyz'"),
    ("sample class unconditional", ["sample", "{vae}", "--class", "3", "--out", "{tmp}/s.png"], "takes no class"),
    ("sample sampler non-diffusion", ["sample", "{vae}", "--sampler", "ddim", "--out", "{tmp}/s.png"], "--sampler is a diffusion option"),
    ("sample sampler unknown", ["sample", "{ddpm}", "--sampler", "nosuch"], "invalid choice: 'nosuch'"),
    ("sample steps zero", ["sample", "{ddpm}", "--steps", "0", "--out", "{tmp}/s.png"], "steps=0"),
    ("sample guidance unconditional", ["sample", "{ddpm}", "--guidance-scale", "2", "--out", "{tmp}/s.png"], "class-conditional"),
    ("sample nan weights", ["sample", "{nan}", "--out", "{tmp}/s.png"], "are not finite (NaN or infinite)"),
    ("eval n negative", ["eval", "{vae}", "-n", "-5"], "n=-5"),
    ("eval n zero", ["eval", "{vae}", "-n", "0"], "n=0"),
    ("eval extractor random bytes", ["eval", "{vae}", "--extractor", "{files}/random.bin", "-n", "20"], "random.bin"),
    ("eval extractor random safetensors", ["eval", "{vae}", "--extractor", "{files}/random.safetensors", "-n", "20"], "damaged or not a safetensors file"),
    ("eval extractor random pth", ["eval", "{vae}", "--extractor", "{files}/random.pth", "-n", "20"], "cannot read Inception weights"),
    ("eval extractor missing", ["eval", "{vae}", "--extractor", "{tmp}/none.safetensors", "-n", "20"], "none.safetensors"),
    ("eval extractor unknown name", ["eval", "{vae}", "--extractor", "nosuch", "-n", "20"], "nosuch"),
    ("eval split unknown", ["eval", "{vae}", "--split", "nosuch"], "invalid choice: 'nosuch'"),
    ("eval baseline unknown", ["eval", "{vae}", "--baseline", "nosuch"], "invalid choice: 'nosuch'"),
    ("eval device unknown", ["eval", "{vae}", "--device", "nosuchdev"], "unknown device 'nosuchdev'"),
    ("eval nan weights", ["eval", "{nan}", "-n", "20"], "not finite (NaN or infinite"),
    ("latent transfer classes out of range", ["latent", "{vae}", "--transfer-attribute", "99", "100", "--out", "{tmp}/l"], "source class 99 has no samples"),
    ("latent pairs zero", ["latent", "{vae}", "--interpolate", "--pairs", "0", "--out", "{tmp}/l"], "pairs=0"),
    ("latent pairs too many", ["latent", "{vae}", "--interpolate", "--pairs", "1000", "--out", "{tmp}/l"], "1000 interpolation pairs need 2000 samples"),
    ("latent steps one", ["latent", "{vae}", "--interpolate", "--steps", "1", "--out", "{tmp}/l"], "at least 2 steps"),
    ("latent n zero", ["latent", "{vae}", "-n", "0", "--out", "{tmp}/l"], "n=0"),
    ("latent on a diffusion run", ["latent", "{ddpm}", "--out", "{tmp}/l"], "ddpm"),
    ("inpaint mask on latent diffusion", ["inpaint", "{ldm}", "--image", "{files}/image.png", "--mask", "{files}/mask.png", "--out", "{tmp}/i.png"], "latent"),
    ("inpaint steps zero", ["inpaint", "{ddpm}", "--image", "{files}/image.png", "--steps", "0", "--out", "{tmp}/i.png"], "steps=0"),
    ("inpaint steps negative", ["inpaint", "{ddpm}", "--image", "{files}/image.png", "--steps", "-2", "--out", "{tmp}/i.png"], "steps=-2"),
    ("inpaint strength above 1", ["inpaint", "{ddpm}", "--image", "{files}/image.png", "--strength", "2", "--out", "{tmp}/i.png"], "strength"),
    ("inpaint n zero", ["inpaint", "{ddpm}", "--image", "{files}/image.png", "-n", "0", "--out", "{tmp}/i.png"], "n=0"),
    ("inpaint missing image", ["inpaint", "{ddpm}", "--image", "{tmp}/none.png", "--out", "{tmp}/i.png"], "none.png"),
    ("inpaint image not a picture", ["inpaint", "{ddpm}", "--image", "{files}/random.png", "--out", "{tmp}/i.png"], "random.png"),
    ("inpaint missing mask", ["inpaint", "{ddpm}", "--image", "{files}/image.png", "--mask", "{tmp}/none.png", "--out", "{tmp}/i.png"], "none.png"),
    ("inpaint on a vae run", ["inpaint", "{vae}", "--image", "{files}/image.png", "--out", "{tmp}/i.png"], "diffusion"),
    ("info missing run", ["info", "{tmp}/none"], "no run directory"),
    ("threads zero", ["--threads", "0", "list"], "--threads 0"),
    ("threads after command zero", ["list", "--threads", "0"], "--threads 0"),
    ("unknown command", ["nosuch"], "invalid choice: 'nosuch'"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_a_bad_command_line_exits_non_zero_with_one_line_naming_the_problem(case, runs, tmp_path, capsys):
    _, argv, words = case
    try:
        code = main(fill(argv, runs, tmp_path))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code not in (0, None), f"exit {code}: {err}"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("genlab") and words in lines[-1], lines[-1]
    if not lines[0].startswith("usage:"):  # argparse's own errors come under its usage lines
        assert len(lines) == 1, err


def _digits():
    return genlab.data.load("digits")


def _vae():
    return genlab.create("vae", data=_digits(), latent_dim=4, hidden=(16,))


PY_CASES = [
    # (id, call, built-in type it stays catchable as, words the message must hold)
    ("load a number", lambda r: genlab.data.load(123), TypeError, "name or a path"),
    ("load nothing", lambda r: genlab.data.load(), ValueError, "needs a dataset name"),
    ("load unknown name", lambda r: genlab.data.load("nosuch"), ValueError, "unknown dataset 'nosuch'"),
    ("load missing path", lambda r: genlab.data.load("/no/such/file.csv"), FileNotFoundError, "no file or folder"),
    ("load unknown option", lambda r: genlab.data.load("digits", nosuch=1), ValueError, "nosuch"),
    ("load seed word", lambda r: genlab.data.load("digits", seed="abc"), ValueError, "seed"),
    ("fit a one-row csv", lambda r: genlab.fit(genlab.create("vae", data=genlab.data.load(r["files"] / "one_row.csv")),
                                               genlab.data.load(r["files"] / "one_row.csv"), max_steps=1), ValueError, "too few to split"),
    ("create without data", lambda r: genlab.create("vae"), TypeError, "needs data="),
    ("create with a number as data", lambda r: genlab.create("vae", data=3), TypeError, "data="),
    ("create unknown model", lambda r: genlab.create("nosuch", data=_digits()), ValueError, "unknown model"),
    ("create unknown field", lambda r: genlab.create("vae", data=_digits(), nosuch=1), ValueError, "no field 'nosuch'"),
    ("create field inf", lambda r: genlab.create("vae", data=_digits(), latent_dim=float("inf")), ValueError, "finite"),
    ("create huge int", lambda r: genlab.create("vae", data=_digits(), latent_dim=10**400), ValueError, "latent_dim"),
    ("create field word", lambda r: genlab.create("vae", data=_digits(), beta="high"), ValueError, "beta"),
    ("create model name not str", lambda r: genlab.create(5, data=_digits()), TypeError, "model name"),
    ("fit a model name", lambda r: genlab.fit("vae", _digits()), TypeError, "genlab.create"),
    ("fit data name", lambda r: genlab.fit(_vae(), "digits"), TypeError, "genlab.data.load"),
    ("fit other shape", lambda r: genlab.fit(_vae(), genlab.data.load("8gaussians")), ValueError, "shape"),
    ("fit unknown option", lambda r: genlab.fit(_vae(), _digits(), nosuch=1), ValueError, "no field 'nosuch'"),
    ("fit max_steps zero", lambda r: genlab.fit(_vae(), _digits(), max_steps=0), ValueError, "max_steps=0"),
    ("fit device unknown", lambda r: genlab.fit(_vae(), _digits(), max_steps=1, device="nosuchdev", progress=False), ValueError, "nosuchdev"),
    ("fit out is a file", lambda r: genlab.fit(_vae(), _digits(), out=r["files"] / "afile", max_steps=1, progress=False), ValueError, "is a file"),
    ("fit resume nothing", lambda r: genlab.fit(_vae(), _digits(), out=r["files"] / "empty", resume=True, max_steps=1), FileNotFoundError, "no checkpoint"),
    ("load a number as run", lambda r: genlab.load(123), TypeError, "run directory"),
    ("load missing run", lambda r: genlab.load(r["root"] / "none"), FileNotFoundError, "no run directory"),
    ("load empty folder", lambda r: genlab.load(r["files"] / "empty"), FileNotFoundError, "not a genlab run"),
    ("load device unknown", lambda r: genlab.load(r["vae"], device="nosuchdev"), ValueError, "nosuchdev"),
    ("load a classifier of random bytes", lambda r: load_classifier(r["files"] / "random.safetensors"), ValueError, "damaged or not a safetensors file"),
    ("load a missing classifier", lambda r: load_classifier(r["files"] / "none.safetensors"), FileNotFoundError, "no classifier"),
    ("sample class of unconditional", lambda r: genlab.load(r["vae"]).sample(4, cond=1), ValueError, "unconditional"),
]


@pytest.mark.parametrize("case", PY_CASES, ids=[c[0] for c in PY_CASES])
def test_a_bad_python_call_raises_a_genlab_error_of_the_expected_builtin_type(case, runs):
    _, call, builtin, words = case
    with pytest.raises(GenlabError) as info:
        call(runs)
    assert isinstance(info.value, builtin), f"{type(info.value).__mro__} is not a {builtin.__name__}"
    assert words in str(info.value) and "\n" not in str(info.value)


def test_the_tables_hold_at_least_eighty_bad_inputs():
    assert len(CLI_CASES) + len(PY_CASES) >= 80


def test_cli_and_python_errors_never_show_a_traceback_in_a_subprocess(runs, tmp_path):
    import subprocess

    result = subprocess.run([sys.executable, "-m", "genlab", "sample", str(runs["vae"]), "-n", "-1"], capture_output=True, text=True,
                            cwd=Path(__file__).parent)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr and "n=-1" in result.stderr
