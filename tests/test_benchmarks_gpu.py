"""benchmarks/gpu.py at tiny sizes on the CPU (its real figures need a GPU), its time guard, and its
FLOP counter against the closed form of a DiT's FLOPs.

benchmarks/ is not a package and pytest does not collect it, so the scripts are imported by path.
diffusers is optional: without it the script measures genlab alone, and the diffusers test is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

pytestmark = pytest.mark.usefixtures("one_thread")


def _load_gpu_script():
    name = "benchmarks_gpu"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / "gpu.py")
        sys.modules[name] = module = importlib.util.module_from_spec(spec)  # before running it: its dataclass looks itself up
        spec.loader.exec_module(module)  # it puts benchmarks/ on sys.path and imports _common from there
    return sys.modules[name]


gpu = _load_gpu_script()
common = sys.modules["_common"]


def _run(argv: list[str]) -> dict:
    with warnings.catch_warnings():  # main() adds a warning filter; keep it out of the other tests
        return gpu.main(argv)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_tiny_cpu_run_measures_every_row(tmp_path, capsys):
    # bf16 only: the fp32 rows take the same code path with autocast off, and their compile would add
    # a third of the test's time (test_jobs_run_in_order_of_importance sees that they are built)
    path = tmp_path / "gpu.json"
    report = _run(["--device", "cpu", "--tiny", "--threads", "1", "--precisions", "bf16", "--json", str(path)])
    out = capsys.readouterr().out
    assert json.loads(path.read_text())["rows"] == json.loads(json.dumps(report["rows"]))  # strict JSON, what main returned

    diffusers_present = common.diffusers_status(gpu.DIFFUSERS_CLASSES)[0]
    impls = ["genlab", "diffusers"] if diffusers_present else ["genlab"]
    assert report["impls"] == impls
    if not diffusers_present:
        assert sum("diffusers is not importable" in line for line in out.splitlines()) == 1
    assert _positive(report["peak_bf16_matmul"]["flops_per_s"])

    rows = report["rows"]
    assert not [r for r in rows if "error" in r or "skipped" in r]
    unet = {(r["impl"], r["mode"], r["precision"]): r for r in rows if r["section"] == "unet"}
    assert set(unet) == {(i, m, "bf16") for i in impls for m in ("eager", "compiled")}
    for (impl, mode, precision), row in unet.items():
        for key in ("parameters", "forward_flops_per_image", "train_images_per_s", "mfu"):
            assert _positive(row[key]), (impl, mode, precision, key)
        assert row["train_flops_per_image"] == 3 * row["forward_flops_per_image"]
        assert _positive(row["sample_images_per_s"]) and row["sample_nfe"] == 3  # DDIM-3 in both (--ddim-rows)
    assert all(unet[i, "compiled", "bf16"]["graph_breaks"] == 0 for i in impls)
    dit = [r for r in rows if r["section"] == "dit"]
    assert [(r["impl"], r["model"]) for r in dit] == [(i, "tiny") for i in impls]
    assert all(_positive(r["train_images_per_s"]) and _positive(r["mfu"]) for r in dit)
    assert dit[0]["compiled_graphs"] == 1  # every genlab DiT block shares one compiled graph

    for line in ("mode precision", "DiT at 8x8x4", "references stated in issue 14", "2,066 images/s (MFU 9.8%)",
                 "265 images/s", "2,512 images/s (MFU 45.0%)", "538 images/s (MFU 49.0%)", "goals of issue 14"):  # fmt: skip
        assert line in out
    assert [g["status"] for g in report["goals"]][2] == "n/a"  # no DiT-B/2 in a tiny run
    if diffusers_present:
        assert all(_positive(r["train_images_per_s"]) for r in report["ratios_genlab_over_diffusers"])


def test_time_guard_skips_what_would_overrun_and_prints_how_to_run_it(capsys):
    report = _run(["--device", "cpu", "--tiny", "--threads", "1", "--impls", "genlab", "--budget-s", "0"])
    out = capsys.readouterr().out
    assert len(report["rows"]) == 5 and all("skipped" in r and "train_images_per_s" not in r for r in report["rows"])
    assert "python benchmarks/gpu.py --only unet --modes compiled --precisions bf16" in out
    assert "python benchmarks/gpu.py --only unet --modes eager --precisions fp32" in out
    assert "python benchmarks/gpu.py --only dit --dit-models tiny" in out
    assert [g["status"] for g in report["goals"]] == ["n/a"] * 3


def test_jobs_run_in_order_of_importance():
    args = gpu.parse_args(["--impls", "genlab"])
    jobs = gpu.build_jobs(args, ["genlab"], torch.device("cpu"))
    order = [(j.labels["model"], j.labels["mode"], j.labels["precision"]) for j in jobs]
    assert order == [
        ("ddpm-cifar10", "compiled", "bf16"), ("DiT-B/2", "compiled", "bf16"), ("ddpm-cifar10", "eager", "bf16"),
        ("ddpm-cifar10", "eager", "fp32"), ("DiT-XL/2", "compiled", "bf16"), ("DiT-S/2", "compiled", "bf16"),
        ("ddpm-cifar10", "compiled", "fp32"),
    ]  # fmt: skip
    guard = gpu.TimeGuard(100.0, started=0.0)
    assert guard.estimate(10.0) == 10.0
    guard.record(10.0, 30.0)  # the first job took 3x its guess: later guesses are tripled
    assert guard.estimate(5.0) == 15.0


def test_flop_count_of_a_dit_is_its_closed_form():
    # 2 FLOPs per multiply-add: patch embedding, noise-level MLP, per block the adaLN modulation, qkv,
    # attention (Q K^T and A V), output projection and MLP, then the final modulation and linear map
    from genlab.nn.dit import FREQUENCY_DIM, DiT

    size, p, channels, hidden, depth, heads = 8, 2, 4, 32, 2, 4
    net = DiT(input_size=size, patch_size=p, in_channels=channels, hidden_size=hidden, depth=depth, num_heads=heads, num_classes=10)
    tokens, d = (size // p) ** 2, hidden
    block = 2 * d * 6 * d + 2 * tokens * d * 3 * d + 2 * 2 * tokens * tokens * d + 2 * tokens * d * d + 2 * 2 * tokens * d * 4 * d
    expected = (2 * tokens * p * p * channels * d + 2 * (FREQUENCY_DIM * d + d * d) + depth * block
                + 2 * d * 2 * d + 2 * tokens * d * p * p * channels)  # fmt: skip
    x, level, y = torch.randn(2, channels, size, size), torch.tensor([3.0, 700.0]), torch.tensor([1, 2])
    assert common.count_flops(lambda: net(x, level, y)) == 2 * expected


def test_matmul_peak_counts_two_flops_per_multiply_add():
    peak = common.matmul_peak(torch.device("cpu"), size=64, iterations=2, repeats=2)
    assert peak["flops_per_s"] == pytest.approx(2 * 64**3 / peak["seconds_per_matmul"])
    assert _positive(peak["flops_per_s"])


def test_diffusers_networks_have_genlab_configuration():
    pytest.importorskip("diffusers")
    if not common.diffusers_status(gpu.DIFFUSERS_CLASSES)[0]:
        pytest.skip("diffusers does not import its DiT and UNet")
    cpu = torch.device("cpu")
    for name, benches, build in [
        ("unet", common.UNET_BENCHES, lambda cls: cls(common.unet_kwargs("tiny", 8), 3, cpu)),
        ("dit", common.DIT_BENCHES, lambda cls: cls("tiny", input_size=8, channels=4, num_classes=10, device=cpu)),
    ]:
        ours, theirs = build(benches["genlab"]), build(benches["diffusers"])
        shape = (3, 8, 8) if name == "unet" else (4, 8, 8)
        flops = [gpu.forward_flops_per_image(b, shape, cpu) for b in (ours, theirs)]
        # the same layout: equal FLOPs for the UNet; diffusers' DiT adds a timestep MLP per block
        assert flops[1] == pytest.approx(flops[0], rel=0 if name == "unet" else 0.05), name
        if name == "unet":
            assert common.count_parameters(ours.network) == common.count_parameters(theirs.network)
