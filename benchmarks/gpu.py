"""Every GPU figure of issue 14 in one run: genlab's UNet and DiTs beside diffusers, with MFU.

It measures, each network beside diffusers' network of the same configuration in the same process:

- the UNet of DDPM's CIFAR-10 layout (preset "ddpm-cifar10", 35.7M parameters) at 32x32x3, genlab's
  against diffusers' UNet2DModel laid out the same way (`_common.diffusers_unet_like`): training
  images/s eager and compiled, in fp32 and bf16 autocast, and DDIM-50 sampling images/s (by default in
  eager fp32, eager bf16 and compiled bf16: `--ddim-rows`). The training step and the sampler are those
  of `diffusion_unet.py` (`_common.measure_training`, `_common.measure_sampling`);
- DiT-S/2, DiT-B/2 and DiT-XL/2 (Peebles & Xie 2023) on 32x32x4 latents, class-conditional on 1000
  classes as in the paper, genlab's (`genlab.create("ddpm", net="dit", preset=..., class_conditional=True)`)
  against diffusers' DiTTransformer2DModel of the same patch size, width, depth and heads: training
  images/s, compiled, bf16 autocast;
- MFU (model FLOPs utilisation) of every training row: FLOPs per image x images/s / the device's bf16
  matmul peak. FLOPs per image are counted, not quoted: FlopCounterMode on one forward pass of the bare
  network (matrix products, convolutions, attention; 2 per multiply-add), times 3 for forward and
  backward. The peak is measured here: the fastest of 5 timed runs of back-to-back 8192 x 8192 bf16
  matmuls (`--peak-size`).

It then prints the genlab / diffusers ratios, the H100 figures that issue 14 states (quoted as
references, not measured), and the issue's goals as PASS/FAIL lines.

One run is meant to fit in under 8 minutes on one H100: the jobs run in order of importance (UNet
compiled bf16, DiT-B/2, UNet eager, DiT-XL/2, DiT-S/2, UNet compiled fp32) under a time guard
(`--budget-s`) that skips a job whose estimated time (a guess per job, scaled by how the finished jobs
compared with their guesses) would overrun, and prints the command that runs what it skipped. The
JSON (`--json`) is rewritten after every job, so a run killed by a time limit keeps what it measured.

    python benchmarks/gpu.py --json results/gpu-h100.json             # every figure (GPU)
    python benchmarks/gpu.py --only dit --dit-models DiT-XL/2         # a part of it
    python benchmarks/gpu.py --device cpu --tiny --threads 1          # smoke run of every code path (seconds)
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    DIT_BENCHES,
    UNET_BENCHES,
    MemoryMeter,
    count_flops,
    count_parameters,
    diffusers_status,
    environment,
    format_table,
    matmul_peak,
    measure_sampling,
    measure_training,
    pick_device,
    ratio,
    unet_kwargs,
    write_json,
)

from genlab.nn.dit import DIT_PRESETS  # noqa: E402

SECTIONS = ("unet", "dit")
DIT_MODELS = ("DiT-S/2", "DiT-B/2", "DiT-XL/2")
DIT_BATCH = {"DiT-S/2": 256, "DiT-B/2": 256, "DiT-XL/2": 128}  # CUDA; XL/2's activations at 256 would fill an 80 GB card (a rough count)
DIFFUSERS_CLASSES = ("UNet2DModel", "DiTTransformer2DModel", "DDPMScheduler", "DDIMScheduler")

# Issue 14's figures for an H100, printed as references: they are quoted, never measured here.
REFERENCES = (
    {"what": "diffusers UNet2DModel (DDPM-CIFAR10 layout), training, compiled bf16", "images_per_s": 2066, "mfu": 0.098},
    {"what": "diffusers UNet2DModel (DDPM-CIFAR10 layout), DDIM-50 sampling", "images_per_s": 265, "mfu": None},
    {"what": "official DiT code, DiT-B/2 training, compiled", "images_per_s": 2512, "mfu": 0.45},
    {"what": "official DiT code, DiT-XL/2 training, compiled", "images_per_s": 538, "mfu": 0.49},
)
GOAL_UNET_TRAIN_RATIO = 2.0  # genlab's UNet training at least 2x diffusers'
GOAL_DDIM_RATIO = 3.0  # genlab's DDIM-50 sampling at least 3x diffusers'
GOAL_DIT_MFU = ("DiT-B/2", 0.55)  # genlab's DiT-B/2 training MFU at least 55%

# Guessed seconds of one network's job on an H100, compilation included: the time guard's prior,
# scaled at run time by how long the finished jobs took against their guesses.
GUESS_UNET_S = {"eager": 15.0, "compiled": 75.0}
GUESS_DDIM_S = {"eager": 10.0, "compiled": 40.0}
GUESS_DIT_S = {"DiT-S/2": 30.0, "DiT-B/2": 35.0, "DiT-XL/2": 60.0}
GUESS_WHOLE_DIT_FACTOR = 2.0  # compiling the whole DiT traces every block: about twice the blocks' compile
GUESS_TINY_S = 3.0


# -- one network's measurement -----------------------------------------------------------------------
def forward_flops_per_image(bench, shape: tuple[int, ...], device: torch.device) -> float:
    """FLOPs of one forward pass of the bare network per image (`_common.count_flops` on a batch of 2)."""
    x = torch.rand(2, *shape, device=device)
    bench.network.eval()
    return count_flops(lambda: bench.forward(x)) / 2


def compile_stats() -> dict[str, int]:
    """Graphs Dynamo compiled and graph breaks it met since the last `torch._dynamo.reset()`."""
    counters = torch._dynamo.utils.counters
    return {"compiled_graphs": int(counters["stats"]["unique_graphs"]), "graph_breaks": int(sum(counters["graph_break"].values()))}


def release(device: torch.device) -> None:
    """Forget compiled graphs and their counts, free memory."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_unet(impl: str, mode: str, precision: str, ddim: bool, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """One UNet row: parameters, forward FLOPs per image, training images/s and peak memory, and, when
    `ddim`, DDIM sampling images/s; memory counted from before the network was built."""
    release(device)  # each row compiles afresh, and no recompile limit carries over
    kwargs = unet_kwargs(args.unet_preset, args.image_size)
    shape = (args.channels, args.image_size, args.image_size)
    meter = MemoryMeter(device)
    meter.set_baseline()
    torch.manual_seed(args.seed)
    bench = UNET_BENCHES[impl](kwargs, args.channels, device)
    row: dict[str, Any] = {"parameters": count_parameters(bench.network), "forward_flops_per_image": forward_flops_per_image(bench, shape, device)}
    if args.channels_last:
        bench.to_channels_last()
    if mode == "compiled":
        bench.compile(**args.compile_options)
    row.update(measure_training(bench, precision, shape=(args.batch_size, *shape), lr=args.lr, warmup=args.warmup,
                                steps=args.train_steps, device=device, meter=meter, channels_last=args.channels_last))  # fmt: skip
    if ddim:
        meter.release()  # the optimizer state and the training batch are gone
        row.update(measure_sampling(bench, precision, n=args.sample_batch, steps=args.sample_steps, repeats=args.repeats,
                                    seed=args.seed, device=device, meter=meter))  # fmt: skip
    if mode == "compiled":
        row.update(compile_stats())
    return row


def measure_dit(impl: str, model: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """One DiT row: parameters, forward FLOPs per image, compiled bf16 training images/s and peak memory."""
    release(device)
    shape = (args.latent_channels, args.latent_size, args.latent_size)
    meter = MemoryMeter(device)
    meter.set_baseline()
    torch.manual_seed(args.seed)
    bench = DIT_BENCHES[impl](model, input_size=args.latent_size, channels=args.latent_channels, num_classes=args.num_classes, device=device)
    row: dict[str, Any] = {"parameters": count_parameters(bench.network), "forward_flops_per_image": forward_flops_per_image(bench, shape, device)}
    if args.dit_compile == "blocks":
        bench.compile_blocks(**args.compile_options)
    else:
        bench.compile(**args.compile_options)
    row.update(measure_training(bench, "bf16", shape=(dit_batch(model, args), *shape), lr=args.lr, warmup=args.warmup,
                                steps=args.train_steps, device=device, meter=meter))  # fmt: skip
    row.update(compile_stats())
    return row


def dit_batch(model: str, args: argparse.Namespace) -> int:
    return args.dit_batch or DIT_BATCH.get(model, 256)


# -- the jobs and the time guard ---------------------------------------------------------------------------
@dataclass(eq=False)
class Job:
    """A row of the tables: each implementation measured by `measure(impl)`."""

    section: str
    labels: dict[str, Any]  # model, mode, precision, batch size...: what identifies the row
    measure: Callable[[str], dict[str, Any]]
    guess_s: float  # the time guard's guess for all implementations together
    rerun: str  # the options that run this job alone


class TimeGuard:
    """Skips a job that would end after `budget_s` seconds from the start. A job's estimate is its guess
    times the ratio of the finished jobs' seconds to their guesses (1 before any has finished)."""

    def __init__(self, budget_s: float, started: float) -> None:
        self.budget_s, self.started = budget_s, started
        self.guessed, self.spent = 0.0, 0.0

    def estimate(self, guess_s: float) -> float:
        return guess_s * (self.spent / self.guessed if self.guessed > 0 else 1.0)

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def record(self, guess_s: float, seconds: float) -> None:
        self.guessed += guess_s
        self.spent += seconds


def build_jobs(args: argparse.Namespace, impls: list[str], device: torch.device) -> list[Job]:
    """The selected jobs, most important first (see the module docstring)."""
    unet: dict[tuple[str, str], Job] = {}
    if "unet" in args.only:
        for mode in args.modes:
            for precision in args.precisions:
                ddim = f"{mode}-{precision}" in args.ddim_rows
                guess = GUESS_TINY_S if args.tiny else GUESS_UNET_S[mode] + (GUESS_DDIM_S[mode] if ddim else 0.0)
                unet[mode, precision] = Job(
                    "unet",
                    {"model": args.unet_preset, "mode": mode, "precision": precision, "batch_size": args.batch_size, "ddim": ddim},
                    lambda impl, m=mode, p=precision, d=ddim: measure_unet(impl, m, p, d, args, device),
                    guess * len(impls),
                    f"--only unet --modes {mode} --precisions {precision}",
                )  # fmt: skip
    dit: dict[str, Job] = {}
    if "dit" in args.only:
        for model in args.dit_models:
            guess = GUESS_TINY_S if args.tiny else GUESS_DIT_S.get(model, 60.0) * (GUESS_WHOLE_DIT_FACTOR if args.dit_compile == "whole" else 1.0)
            dit[model] = Job(
                "dit",
                {"model": model, "mode": "compiled", "precision": "bf16", "batch_size": dit_batch(model, args), "compile_scope": args.dit_compile},
                lambda impl, m=model: measure_dit(impl, m, args, device),
                guess * len(impls),
                f"--only dit --dit-models {model}",
            )  # fmt: skip
    order: list[Job | None] = [
        unet.pop(("compiled", "bf16"), None),
        dit.pop("DiT-B/2", None),
        unet.pop(("eager", "bf16"), None),
        unet.pop(("eager", "fp32"), None),
        dit.pop("DiT-XL/2", None),
        dit.pop("DiT-S/2", None),
        *unet.values(),
        *dit.values(),
    ]
    return [job for job in order if job is not None]


def run_job(job: Job, impls: list[str], peak: float) -> list[dict[str, Any]]:
    rows = []
    for impl in impls:
        row: dict[str, Any] = {"section": job.section, "impl": impl, **job.labels}
        started = time.perf_counter()
        try:
            row.update(job.measure(impl))
        except Exception as error:  # one failing row (out of memory, no compiler) must not end the run
            traceback.print_exc()
            row["error"] = f"{type(error).__name__}: {error}"
        row["seconds"] = time.perf_counter() - started
        if "train_images_per_s" in row:
            row["train_flops_per_image"] = 3 * row["forward_flops_per_image"]
            row["mfu"] = row["train_flops_per_image"] * row["train_images_per_s"] / peak
        print(progress_line(row), flush=True)
        rows.append(row)
    return rows


def progress_line(row: dict[str, Any]) -> str:
    name = f"  {row['section']} {row['model']} {row['mode']} {row['precision']} {row['impl']}"
    if "error" in row:
        return f"{name}: failed ({row['error']})"
    text = f"{name}: train {row['train_images_per_s']:,.1f} img/s, MFU {percent(row['mfu'])}"
    if "sample_images_per_s" in row:
        text += f", DDIM-{row['sample_nfe']} {row['sample_images_per_s']:,.1f} img/s"
    return text + f" ({row['seconds']:.0f} s)"


def percent(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


# -- tables, ratios and goals ----------------------------------------------------------------------------------
def pair(rows: list[dict[str, Any]], **labels: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(genlab's row, diffusers' row) with these labels; {} for one that is missing."""
    found = {r["impl"]: r for r in rows if all(r.get(k) == v for k, v in labels.items())}
    return found.get("genlab", {}), found.get("diffusers", {})


def ratios(rows: list[dict[str, Any]], jobs: list[Job]) -> list[dict[str, Any]]:
    """genlab / diffusers for each job's row: training and DDIM images/s."""
    out = []
    for job in jobs:
        ours, theirs = pair(rows, section=job.section, **job.labels)
        out.append({
            "section": job.section, **job.labels,
            "train_images_per_s": ratio(ours.get("train_images_per_s"), theirs.get("train_images_per_s")),
            "sample_images_per_s": ratio(ours.get("sample_images_per_s"), theirs.get("sample_images_per_s")),
        })  # fmt: skip
    return out


def best(rows: list[dict[str, Any]], impl: str, section: str, key: str) -> dict[str, Any] | None:
    candidates = [r for r in rows if r["impl"] == impl and r["section"] == section and r.get(key) is not None]
    return max(candidates, key=lambda r: r[key]) if candidates else None


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 14's goals, judged on this run's rows: genlab's fastest row against diffusers' fastest."""
    out = []
    for key, target, what in [
        ("train_images_per_s", GOAL_UNET_TRAIN_RATIO, "UNet training images/s"),
        ("sample_images_per_s", GOAL_DDIM_RATIO, "UNet DDIM sampling images/s"),
    ]:
        ours, theirs = best(rows, "genlab", "unet", key), best(rows, "diffusers", "unet", key)
        goal = {"goal": f"{what}: genlab >= {target:g}x diffusers (fastest row of each)", "target": target}
        if ours is None or theirs is None:
            goal.update(status="n/a", detail="genlab or diffusers not measured")
        else:
            value = ours[key] / theirs[key]
            goal.update(
                status="PASS" if value >= target else "FAIL", value=value,
                detail=f"genlab {ours['mode']} {ours['precision']} {ours[key]:,.1f} / diffusers {theirs['mode']} {theirs['precision']} {theirs[key]:,.1f} = {value:.2f}x",
            )  # fmt: skip
        out.append(goal)
    model, target = GOAL_DIT_MFU
    ours, _ = pair(rows, section="dit", model=model)
    goal = {"goal": f"{model} training MFU >= {target:.0%} (genlab, compiled bf16)", "target": target}
    if ours.get("mfu") is None:
        goal.update(status="n/a", detail=f"{model} not measured")
    else:
        goal.update(status="PASS" if ours["mfu"] >= target else "FAIL", value=ours["mfu"], detail=f"MFU {percent(ours['mfu'])}")
    out.append(goal)
    return out


def print_tables(rows: list[dict[str, Any]], jobs: list[Job], skipped: list[Job], args: argparse.Namespace, peak: dict[str, Any]) -> None:
    def name(job: Job, text: str) -> str:
        return text + (" (skipped)" if job in skipped else "")

    unet_jobs, dit_jobs = [j for j in jobs if j.section == "unet"], [j for j in jobs if j.section == "dit"]
    if unet_jobs:
        print(f"\nUNet {args.unet_preset!r} at {args.image_size}x{args.image_size}x{args.channels}: training batch {args.batch_size}, "
              f"DDIM-{args.sample_steps} batch {args.sample_batch}; img/s, MFU of the bf16 matmul peak, g/d = genlab / diffusers")  # fmt: skip
        table = []
        for job in sorted(unet_jobs, key=lambda j: (j.labels["mode"] != "eager", j.labels["precision"] != "fp32")):
            ours, theirs = pair(rows, section="unet", **job.labels)
            table.append([
                name(job, f"{job.labels['mode']} {job.labels['precision']}"),
                ours.get("train_images_per_s"), theirs.get("train_images_per_s"),
                ratio(ours.get("train_images_per_s"), theirs.get("train_images_per_s")),
                percent(ours.get("mfu")), percent(theirs.get("mfu")),
                ours.get("sample_images_per_s"), theirs.get("sample_images_per_s"),
                ratio(ours.get("sample_images_per_s"), theirs.get("sample_images_per_s")),
            ])  # fmt: skip
        print(format_table(
            ["mode precision", "genlab train", "diffusers train", "train g/d", "genlab MFU", "diffusers MFU",
             f"genlab DDIM-{args.sample_steps}", f"diffusers DDIM-{args.sample_steps}", "DDIM g/d"], table))  # fmt: skip
    if dit_jobs:
        print(f"\nDiT at {args.latent_size}x{args.latent_size}x{args.latent_channels}, {args.num_classes} classes, compiled "
              f"({args.dit_compile}) bf16 training; img/s, GFLOP/img = 3 x forward, MFU of the bf16 matmul peak, g/d = genlab / diffusers")  # fmt: skip
        table = []
        for job in sorted(dit_jobs, key=lambda j: list(DIT_PRESETS).index(j.labels["model"])):
            ours, theirs = pair(rows, section="dit", model=job.labels["model"])
            table.append([
                name(job, job.labels["model"]), job.labels["batch_size"],
                millions(ours.get("parameters")), millions(theirs.get("parameters")),
                giga(ours.get("train_flops_per_image")), giga(theirs.get("train_flops_per_image")),
                ours.get("train_images_per_s"), theirs.get("train_images_per_s"),
                ratio(ours.get("train_images_per_s"), theirs.get("train_images_per_s")),
                percent(ours.get("mfu")), percent(theirs.get("mfu")),
            ])  # fmt: skip
        print(format_table(
            ["model", "batch", "genlab params", "diffusers params", "genlab GFLOP/img", "diffusers GFLOP/img",
             "genlab img/s", "diffusers img/s", "g/d", "genlab MFU", "diffusers MFU"], table))  # fmt: skip
    for r in rows:
        if "error" in r:
            print(f"failed: {r['section']} {r['model']} {r['mode']} {r['precision']} {r['impl']}: {r['error']}")
    print(f"\nbf16 matmul peak measured in this run: {rate(peak['flops_per_s'])} ({peak['size']} x {peak['size']})")


def rate(flops_per_s: float) -> str:
    return f"{flops_per_s / 1e12:,.1f} TFLOP/s" if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:,.2f} GFLOP/s"


def millions(count: int | None) -> str:
    return "-" if count is None else f"{count / 1e6:.1f}M"


def giga(flops: float | None) -> str:
    return "-" if flops is None else f"{flops / 1e9:.3g}"


def print_references_and_goals(goal_rows: list[dict[str, Any]], tiny: bool) -> None:
    print("\nreferences stated in issue 14 for an H100 (quoted, not measured in this run):")
    for ref in REFERENCES:
        mfu = f" (MFU {ref['mfu']:.1%})" if ref["mfu"] is not None else ""
        print(f"  {ref['what']}: {ref['images_per_s']:,} images/s{mfu}")
    print("\ngoals of issue 14, judged on this run" + (" (--tiny: tiny sizes, the verdicts mean nothing)" if tiny else "") + ":")
    for goal in goal_rows:
        print(f"  [{goal['status']}] {goal['goal']}: {goal['detail']}")


# -- the run -----------------------------------------------------------------------------------------
def split(value: str, allowed: tuple[str, ...], option: str) -> list[str]:
    items = [v for v in value.split(",") if v]
    if not items or set(items) - set(allowed):
        raise SystemExit(f"{option} {value!r}: a comma-separated choice of {', '.join(allowed)}")
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--only", default="unet,dit", help="sections to run: unet, dit (comma-separated)")
    parser.add_argument("--impls", default="genlab,diffusers", help="genlab, diffusers (skipped if not importable)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="time guard: skip jobs that would end later than this (default 7.5 min)")
    unet = parser.add_argument_group("UNet")
    unet.add_argument("--unet-preset", default="ddpm-cifar10", help="genlab UNet preset, moved to --image-size (default: ddpm-cifar10, 35.7M)")
    unet.add_argument("--image-size", type=int, default=32)
    unet.add_argument("--channels", type=int, default=3)
    unet.add_argument("--modes", default="eager,compiled", help="comma-separated: eager, compiled")
    unet.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    unet.add_argument("--ddim-rows", default="eager-fp32,eager-bf16,compiled-bf16",
                      help="the mode-precision rows that also time DDIM sampling, or all, or none "
                           "(compiled-fp32 is left out by default: one more compile per network)")  # fmt: skip
    unet.add_argument("--batch-size", type=int, default=None, help="training batch (default: 128 on CUDA, 16 on the CPU)")
    unet.add_argument("--sample-batch", type=int, default=None, help="images per DDIM run (default: 256 on CUDA, 8 on the CPU)")
    unet.add_argument("--sample-steps", type=int, default=50, help="DDIM steps per sampling run")
    unet.add_argument("--repeats", type=int, default=3, help="timed DDIM runs (their median counts)")
    unet.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                      help="channels_last weights and inputs for the UNet (default: on CUDA, as genlab.fit does)")  # fmt: skip
    dit = parser.add_argument_group("DiT")
    dit.add_argument("--dit-models", default=",".join(DIT_MODELS), help="comma-separated DIT_PRESETS names")
    dit.add_argument("--dit-batch", type=int, default=None, help="training batch (default: 256, 128 for DiT-XL/2; 8 on the CPU)")
    dit.add_argument("--dit-compile", choices=("blocks", "whole"), default="blocks",
                     help="torch.compile each transformer block (default: one compile serves every block) or the whole network")  # fmt: skip
    dit.add_argument("--latent-size", type=int, default=32)
    dit.add_argument("--latent-channels", type=int, default=4)
    dit.add_argument("--num-classes", type=int, default=1000)
    common = parser.add_argument_group("timing")
    common.add_argument("--warmup", type=int, default=3, help="untimed training steps first (they hold the compilation)")
    common.add_argument("--train-steps", type=int, default=10, help="timed training steps (their median counts)")
    common.add_argument("--compile-backend", default=None, help="torch.compile backend (default: inductor; eager for --tiny on the CPU)")
    common.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs (default: torch's default mode)")
    common.add_argument("--peak-size", type=int, default=None, help="side of the bf16 matmuls that measure the peak (default: 8192 on CUDA, 1024 on the CPU)")
    common.add_argument("--lr", type=float, default=1e-4)
    common.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--json", default=None, help="write settings, environment and raw numbers here (after every job)")
    common.add_argument("--tiny", action="store_true",
                        help="smoke run: tiny UNet and DiT at 8x8, batches of 2, 2 timed steps, DDIM-3; the numbers mean nothing")  # fmt: skip
    args = parser.parse_args(argv)

    args.only = split(args.only, SECTIONS, "--only")
    args.modes = split(args.modes, ("eager", "compiled"), "--modes")
    args.precisions = split(args.precisions, ("fp32", "bf16"), "--precisions")
    args.impls = split(args.impls, ("genlab", "diffusers"), "--impls")
    rows = tuple(f"{m}-{p}" for m in ("eager", "compiled") for p in ("fp32", "bf16"))
    args.ddim_rows = list(rows) if args.ddim_rows == "all" else [] if args.ddim_rows == "none" else split(args.ddim_rows, rows, "--ddim-rows")
    if args.tiny:
        args.unet_preset, args.image_size, args.latent_size, args.num_classes = "tiny", 8, 8, 10
        args.warmup, args.train_steps, args.repeats, args.sample_steps = 1, 2, 1, 3
        args.batch_size, args.sample_batch, args.dit_batch = args.batch_size or 2, args.sample_batch or 2, args.dit_batch or 2
        args.peak_size = args.peak_size or 256
        if args.dit_models == ",".join(DIT_MODELS):
            args.dit_models = "tiny"
    args.dit_models = split(args.dit_models, tuple(DIT_PRESETS), "--dit-models")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    # diffusers' Upsample2D calls an lru_cache'd version check that Dynamo traces through, harmlessly
    warnings.filterwarnings("ignore", message=r".*functools\.lru_cache.*")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    device = pick_device(args.device)
    on_cuda = device.type == "cuda"
    args.batch_size = args.batch_size or (128 if on_cuda else 16)
    args.sample_batch = args.sample_batch or (256 if on_cuda else 8)
    args.dit_batch = args.dit_batch or (None if on_cuda else 8)
    args.channels_last = on_cuda if args.channels_last is None else args.channels_last
    args.peak_size = args.peak_size or (8192 if on_cuda else 1024)
    if args.compile_backend is None:
        # Inductor's C++ code generation takes minutes on a CPU even for the tiny networks
        args.compile_backend = "eager" if args.tiny and not on_cuda else "inductor"
    # static shapes: the DDIM batch differs from the training batch, and a dynamic-shape recompile
    # would time other kernels than the ones a fixed-batch run uses
    args.compile_options = {"backend": args.compile_backend, "dynamic": False, "mode": args.compile_mode}

    name = torch.cuda.get_device_name(device) if on_cuda else "CPU"
    print(f"device {device} ({name}); torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"torch.compile backend {args.compile_backend!r}, mode {args.compile_mode or 'default'}; time guard {args.budget_s:.0f} s")  # fmt: skip
    if args.tiny:
        print("--tiny: tiny networks and batches, every code path in seconds; the numbers mean nothing")
    impls = list(args.impls)
    available, diffusers_version = diffusers_status(DIFFUSERS_CLASSES)
    if "diffusers" in impls and not available:
        print(f"diffusers is not importable ({diffusers_version}): measuring genlab alone, no genlab/diffusers ratios")
        impls.remove("diffusers")
    elif "diffusers" in impls:
        print(f"diffusers {diffusers_version}")

    peak = matmul_peak(device, size=args.peak_size, iterations=20 if on_cuda else 2, repeats=5 if on_cuda else 2)
    print(f"bf16 matmul peak: {rate(peak['flops_per_s'])} ({args.peak_size} x {args.peak_size}, the fastest of the timed runs)")

    info = environment()
    if on_cuda:
        info.update({
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "capability": ".".join(map(str, torch.cuda.get_device_capability(device))),
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        })  # fmt: skip
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "compile_options")}
    report: dict[str, Any] = {
        "benchmark": "gpu", "device": str(device), "device_name": name, "environment": info, "settings": settings,
        "impls": impls, "diffusers": diffusers_version, "peak_bf16_matmul": peak,
        "references_quoted_not_measured": list(REFERENCES), "rows": [],
    }  # fmt: skip

    jobs = build_jobs(args, impls, device)
    guard = TimeGuard(args.budget_s, started)
    rows: list[dict[str, Any]] = report["rows"]
    skipped: list[Job] = []
    for job in jobs:
        labels = " ".join(str(job.labels[k]) for k in ("model", "mode", "precision"))
        estimate, left = guard.estimate(job.guess_s), guard.left()
        if estimate > left:
            print(f"skipping {job.section} {labels}: about {estimate:.0f} s needed, {max(left, 0):.0f} s left in the time guard", flush=True)
            rows += [{"section": job.section, "impl": impl, **job.labels, "skipped": f"time guard: ~{estimate:.0f} s needed, {max(left, 0):.0f} s left"} for impl in impls]
            skipped.append(job)
            continue
        print(f"{job.section} {labels} (batch {job.labels['batch_size']}; ~{estimate:.0f} s estimated, {left:.0f} s left) ...", flush=True)
        job_started = time.perf_counter()
        rows += run_job(job, impls, peak["flops_per_s"])
        guard.record(job.guess_s, time.perf_counter() - job_started)
        write_json(args.json, report, quiet=True)

    report["ratios_genlab_over_diffusers"] = ratios(rows, jobs)
    report["goals"] = goals(rows)
    report["total_s"] = time.perf_counter() - started
    print_tables(rows, jobs, skipped, args, peak)
    if len(impls) < 2:
        print("no genlab/diffusers ratios: diffusers was not measured")
    print_references_and_goals(report["goals"], args.tiny)
    if skipped:
        print("\nskipped by the time guard; run them with (plus your other options):")
        for job in skipped:
            print(f"  python benchmarks/gpu.py {job.rerun} --json PART.json")
    print(f"\ntotal {report['total_s']:.0f} s")
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
