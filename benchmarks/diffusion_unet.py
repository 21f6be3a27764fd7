"""Speed and memory of genlab's diffusion UNet at 32x32x3, beside diffusers' UNet2DModel of the same size.

For each network, execution mode (eager, torch.compile) and precision (fp32, bf16 autocast) it measures

- training images/s: batch_size / the median wall time of one training step, which is the eps-prediction
  loss (genlab: `DiffusionModel.loss` with its linear 1000-step schedule; diffusers: the same loss
  written with its DDPMScheduler.add_noise), backward, AdamW step and zeroing of the gradients, on random
  images; `--warmup` steps first are not timed (they hold compilation and allocator growth);
- training peak memory over the timed steps (see `_common.MemoryMeter`: allocated CUDA memory, or the
  growth of the process's resident set on the CPU), above what was in use before the network was built,
  so it counts weights, gradients, AdamW state and activations;
- sampling images/s: sample_batch / the median wall time of one DDIM-50 run (deterministic, eta = 0;
  genlab: `model.generate(n, sampler="ddim", steps=50)`; diffusers: its DDIMScheduler with "trailing"
  spacing, the same time grid, called in the usual `for t in timesteps: step(unet(x, t))` loop);
  a 2-step run first compiles and warms up the network at that batch size;
- sampling peak memory, as for training (weights plus the sampling working set).

"compiled" wraps the network alone in torch.compile (default mode) for both libraries; the loss,
the noise draws and the sampler's arithmetic stay eager. bf16 is torch.autocast(bfloat16) around the
forward pass; weights and optimizer state stay fp32. On a CPU without bf16 instructions bf16 is slow.
The genlab/diffusers ratios compare the two in the same process, mode and precision.

    python benchmarks/diffusion_unet.py                               # CPU: preset "mnist" at 32x32
    python benchmarks/diffusion_unet.py --preset ddpm-cifar10 --json results/unet-h100.json   # GPU
    python benchmarks/diffusion_unet.py --quick                       # smoke run of every path
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    UNET_BENCHES,
    MemoryMeter,
    check_parameter_match,
    count_parameters,
    diffusers_status,
    diffusers_unet_like,
    environment,
    format_table,
    measure_sampling,
    measure_training,
    pick_device,
    ratio,
    unet_kwargs,
    write_json,
)

from genlab.nn.unet import UNet  # noqa: E402


# -- one measurement ----------------------------------------------------------------------------------
def measure(impl: str, mode: str, precision: str, args: argparse.Namespace, kwargs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Training, then DDIM sampling, of one network in one mode and precision; see the module docstring.
    Memory of both phases is counted from before the network was built."""
    torch._dynamo.reset()  # each configuration compiles afresh, and no cache limit carries over
    meter = MemoryMeter(device)
    meter.set_baseline()
    torch.manual_seed(args.seed)
    bench = UNET_BENCHES[impl](kwargs, args.channels, device)
    if args.channels_last:
        bench.to_channels_last()
    if mode == "compiled":
        bench.compile()
    shape = (args.batch_size, args.channels, args.image_size, args.image_size)
    training = measure_training(bench, precision, shape=shape, lr=args.lr, warmup=args.warmup, steps=args.train_steps,
                                device=device, meter=meter, channels_last=args.channels_last)  # fmt: skip
    meter.release()  # the optimizer state and the training batch are gone
    sampling = measure_sampling(bench, precision, n=args.sample_batch, steps=args.sample_steps, repeats=args.repeats,
                                seed=args.seed, device=device, meter=meter)  # fmt: skip
    return {**training, **sampling}


def warm_up_process(configurations: list[tuple[str, str, str]], args: argparse.Namespace, device: torch.device) -> None:
    """Run every configuration once, untimed, on the "tiny" UNet with batches of 2. On the CPU the
    memory measure is the growth of the resident set, and without this the first configuration of
    each kind would carry the process's one-off costs (lazy imports, oneDNN, the compiler: ~100 MiB
    for the first torch.compile) that later ones find already paid."""
    print("warming up the process (untimed, tiny UNet) ...", flush=True)
    tiny = argparse.Namespace(**{**vars(args), "batch_size": 2, "sample_batch": 2, "warmup": 1, "train_steps": 1, "repeats": 1, "sample_steps": 2})
    for impl, mode, precision in configurations:
        try:
            measure(impl, mode, precision, tiny, unet_kwargs("tiny", args.image_size), device)
        except Exception:  # reported when the configuration itself is measured
            pass


# -- the run -----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist", help="genlab UNet preset, moved to --image-size (default: mnist, 6.5M parameters; ddpm-cifar10 on a GPU)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch (default: 16 on the CPU, 128 on CUDA)")
    parser.add_argument("--sample-batch", type=int, default=None, help="images per DDIM run (default: 8 on the CPU, 256 on CUDA)")
    parser.add_argument("--sample-steps", type=int, default=50, help="DDIM steps (network evaluations) per sampling run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--train-steps", type=int, default=10, help="timed training steps (their median counts)")
    parser.add_argument("--repeats", type=int, default=3, help="timed sampling runs (their median counts)")
    parser.add_argument("--modes", default="eager,compiled", help="comma-separated: eager, compiled")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--impls", default="genlab,diffusers", help="comma-separated: genlab, diffusers (skipped if not importable)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels_last weights and inputs (default: on CUDA, as genlab.fit does)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny preset, batches of 2, DDIM-5, one or two timed repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.warmup, args.train_steps, args.repeats, args.sample_steps = "tiny", 1, 2, 1, 5
        args.batch_size, args.sample_batch = args.batch_size or 2, args.sample_batch or 2
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    # diffusers' Upsample2D calls an lru_cache'd version check that Dynamo traces through, harmlessly
    warnings.filterwarnings("ignore", message=r".*functools\.lru_cache.*")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    on_cuda = device.type == "cuda"
    args.batch_size = args.batch_size or (128 if on_cuda else 16)
    args.sample_batch = args.sample_batch or (256 if on_cuda else 8)
    args.channels_last = on_cuda if args.channels_last is None else args.channels_last
    modes = [m for m in args.modes.split(",") if m]
    precisions = [p for p in args.precisions.split(",") if p]
    impls = [i for i in args.impls.split(",") if i]
    for value, allowed in [(modes, ("eager", "compiled")), (precisions, ("fp32", "bf16")), (impls, tuple(UNET_BENCHES))]:
        if not value or set(value) - set(allowed):
            raise SystemExit(f"{value} must be a comma-separated choice of {', '.join(allowed)}")

    kwargs = unet_kwargs(args.preset, args.image_size)
    genlab_params = count_parameters(UNet(**kwargs, in_channels=args.channels, out_channels=args.channels))
    print(f"device {device}; UNet preset {args.preset!r} at {args.image_size}x{args.image_size}x{args.channels}: {kwargs}")
    print(f"batch {args.batch_size} (training), {args.sample_batch} (sampling, DDIM-{args.sample_steps}); "
          f"channels_last {args.channels_last}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads")

    available, diffusers_version = diffusers_status()
    diffusers_params = None
    if "diffusers" in impls:
        if available:
            diffusers_params = count_parameters(diffusers_unet_like(kwargs, args.channels))
            print(f"diffusers {diffusers_version}; " + check_parameter_match(genlab_params, diffusers_params))
        else:
            print(f"diffusers is not importable ({diffusers_version}); measuring genlab alone")
            impls.remove("diffusers")
    else:
        print(f"parameters: genlab {genlab_params:,}")

    started = time.perf_counter()
    configurations = [(impl, mode, precision) for impl in impls for mode in modes for precision in precisions]
    if device.type == "cpu":
        warm_up_process(configurations, args, device)

    results: list[dict[str, Any]] = []
    for impl, mode, precision in configurations:
        label = f"{impl} {mode} {precision}"
        print(f"measuring {label} ...", flush=True)
        row: dict[str, Any] = {"impl": impl, "mode": mode, "precision": precision}
        try:
            row.update(measure(impl, mode, precision, args, kwargs, device))
        except Exception as error:  # one failing configuration (e.g. no compiler) must not end the run
            traceback.print_exc()
            row["error"] = f"{type(error).__name__}: {error}"
            print(f"  {label} failed: {row['error']}")
        results.append(row)

    memory_note = "MiB allocated (CUDA)" if on_cuda else "MiB RSS growth (CPU)"
    print()
    print(format_table(
        ["network", "mode", "precision", "train img/s", f"train peak {memory_note}", f"DDIM-{args.sample_steps} img/s", f"sample peak {memory_note}"],
        [[r["impl"], r["mode"], r["precision"], r.get("train_images_per_s"), r.get("train_peak_mib"),
          r.get("sample_images_per_s"), r.get("sample_peak_mib")] for r in results],
    ))  # fmt: skip

    ratios = []
    by_key = {(r["impl"], r["mode"], r["precision"]): r for r in results}
    for mode in modes:
        for precision in precisions:
            ours, theirs = by_key.get(("genlab", mode, precision)), by_key.get(("diffusers", mode, precision))
            if not ours or not theirs or "error" in ours or "error" in theirs:
                continue
            ratios.append({
                "mode": mode, "precision": precision,
                **{key: ratio(ours[key], theirs[key]) for key in ("train_images_per_s", "train_peak_mib", "sample_images_per_s", "sample_peak_mib")},
            })  # fmt: skip
    if ratios:
        print("\ngenlab / diffusers (speed > 1: genlab faster; memory < 1: genlab uses less)")
        print(format_table(
            ["mode", "precision", "train img/s", "train memory", "sample img/s", "sample memory"],
            [[r["mode"], r["precision"], r["train_images_per_s"], r["train_peak_mib"], r["sample_images_per_s"], r["sample_peak_mib"]] for r in ratios],
        ))  # fmt: skip
    elif "diffusers" not in impls:
        print("\nno genlab/diffusers ratios: diffusers was not measured")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")

    report = {
        "benchmark": "diffusion_unet",
        "device": str(device),
        "environment": environment(),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "unet": kwargs,
        "parameters": {"genlab": genlab_params, "diffusers": diffusers_params},
        "memory_measures": "max_memory_allocated above the baseline (CUDA)" if on_cuda else "peak RSS growth above the baseline (CPU)",
        "results": results,
        "ratios_genlab_over_diffusers": ratios,
    }
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
