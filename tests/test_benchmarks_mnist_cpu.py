"""benchmarks/mnist_cpu.py's core in --quick mode on a small fake MNIST: every row's numbers are
finite and positive and the data share is a percentage. Runs with or without pythae and diffusers
installed (their rows are skipped where they do not import)."""

from __future__ import annotations

import importlib.util
import json
import math
import struct
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "mnist_cpu.py"


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed idx file of unsigned bytes: magic (0, 0, 0x08, ndim), big-endian int32 sizes."""
    path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape) + array.astype(np.uint8).tobytes())


def fake_mnist(root: Path, side: int = 14, train: int = 120, test: int = 20) -> None:
    """root/mnist/ with the four official file names: random digits-like images (a bright square on
    black), labels 0-9. Half MNIST's side keeps every model's step and PixelCNN's pixel-by-pixel
    sampling short; the models pick their defaults for this size as they would for 28x28."""
    rng = np.random.default_rng(0)
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for prefix, n in (("train", train), ("t10k", test)):
        images = np.zeros((n, side, side), np.uint8)
        for image in images:
            top, left = rng.integers(0, side // 2, size=2)
            image[top : top + side // 2, left : left + side // 2] = rng.integers(128, 256)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, size=n))


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_mnist_cpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_gives_finite_rows(tmp_path, one_thread):
    fake_mnist(tmp_path / "data")
    script = load_script()
    out = tmp_path / "bench.json"
    payload = script.main(["--quick", "--threads", "1", "--root", str(tmp_path / "data"), "--models", "vae,pixelcnn",
                           "--batch-size", "16", "--json", str(out)])  # fmt: skip

    rows = {r["row"]: r for r in payload["rows"]}
    assert {"vae", "pixelcnn", "MLP VAE (floor)"} <= set(rows)
    for row in rows.values():
        assert "error" not in row, row
        for key in ("images_per_s", "ms_per_step", "step_s", "data_s"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["row"], key, row[key])
        assert 0.0 <= row["data_share_pct"] <= 100.0
        assert row["parameters"] > 0 and row["batch_size"] == 16 and row["steps_timed"] == 2
        assert math.isclose(row["images_per_s"], row["batch_size"] / row["step_s"])
    for name in ("vae", "pixelcnn"):
        row = rows[name]
        assert row["genlab"] and row["beside"] == name
        # the defaults are read from genlab, not written in the script
        assert row["max_steps"] == row["train_config"]["max_steps"] > 0
        assert math.isclose(row["implied_train_s"], row["max_steps"] * row["step_s"])
    assert math.isfinite(rows["pixelcnn"]["sample_images_per_s"]) and rows["pixelcnn"]["sample_images_per_s"] > 0
    # the MLP floor sits beside vae with vae's batch
    assert rows["MLP VAE (floor)"]["beside"] == "vae" and not rows["MLP VAE (floor)"]["genlab"]

    ratios = {(r["genlab"], r["reference"]): r for r in payload["ratios"]}
    floor = ratios[("vae", "MLP VAE (floor)")]["images_per_s"]
    assert math.isclose(floor, rows["vae"]["images_per_s"] / rows["MLP VAE (floor)"]["images_per_s"])
    goals = {g["goal"] for g in payload["goals"]}
    assert "vae: training >= 1,000 images/s" in goals and "pixelcnn: data share < 10% of a step" in goals

    saved = json.loads(out.read_text())  # strict JSON: NaN written as null
    assert saved["environment"]["cpu_threads"] == 1 and saved["settings"]["models"] == ["vae", "pixelcnn"]
    assert len(saved["rows"]) == len(payload["rows"])
