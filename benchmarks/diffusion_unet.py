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
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MemoryMeter,
    autocast,
    check_parameter_match,
    count_parameters,
    diffusers_status,
    diffusers_unet_like,
    environment,
    format_table,
    median,
    pick_device,
    ratio,
    timed,
    unet_kwargs,
    write_json,
)

from genlab.data.dataset import Batch, DataSpec  # noqa: E402
from genlab.models.diffusion.model import DiffusionConfig, DiffusionModel  # noqa: E402
from genlab.nn.unet import UNet  # noqa: E402


# -- the two networks behind one interface -----------------------------------------------------------
class GenlabBench:
    """genlab's DiffusionModel (ddpm defaults: linear schedule, 1000 steps, eps prediction) whose
    network is the UNet of `kwargs` (a preset moved to the benchmark's image size)."""

    name = "genlab"

    def __init__(self, kwargs: dict[str, Any], channels: int, device: torch.device) -> None:
        class Model(DiffusionModel):
            def _build_network(self, config: DiffusionConfig, spec: DataSpec) -> nn.Module:
                return UNet(**kwargs, in_channels=channels, out_channels=channels)

        size = kwargs["image_size"]
        spec = DataSpec("random-images", kind="image", shape=(channels, size, size), value_range=(0.0, 1.0), levels=256)
        self.model = Model(DiffusionConfig(), spec).to(device)

    @property
    def network(self) -> nn.Module:
        return self.model.net

    def compile(self) -> None:
        self.model.net = torch.compile(self.model.net)

    def to_channels_last(self) -> None:
        self.model.to(memory_format=torch.channels_last)

    def loss(self, x: Tensor) -> Tensor:
        return self.model.loss(Batch(x)).total

    def sample(self, n: int, steps: int, generator: torch.Generator) -> tuple[Tensor, int]:
        result = self.model.generate(n, generator=generator, sampler="ddim", steps=steps)
        return result.x, result.nfe


class DiffusersBench:
    """diffusers' UNet2DModel laid out like genlab's UNet (`_common.diffusers_unet_like`), trained
    with DDPMScheduler (linear betas, 1000 steps, eps prediction) and sampled with DDIMScheduler."""

    name = "diffusers"

    def __init__(self, kwargs: dict[str, Any], channels: int, device: torch.device) -> None:
        from diffusers import DDIMScheduler, DDPMScheduler

        self.unet = diffusers_unet_like(kwargs, channels).to(device)
        self.net: nn.Module = self.unet
        self.channels, self.size, self.device = channels, kwargs["image_size"], device
        self.train_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
        # "trailing": steps from t = 999 down, the grid genlab's DDIM uses (Lin et al. 2024)
        self.ddim = DDIMScheduler.from_config(self.train_scheduler.config, timestep_spacing="trailing")

    @property
    def network(self) -> nn.Module:
        return self.unet

    def compile(self) -> None:
        self.net = torch.compile(self.unet)

    def to_channels_last(self) -> None:
        self.unet.to(memory_format=torch.channels_last)

    def loss(self, x: Tensor) -> Tensor:
        x0 = 2.0 * x - 1.0  # [0, 1] -> [-1, 1]
        t = torch.randint(0, self.train_scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.train_scheduler.add_noise(x0, noise, t)
        return F.mse_loss(self.net(x_t, t).sample.float(), noise)

    @torch.no_grad()
    def sample(self, n: int, steps: int, generator: torch.Generator) -> tuple[Tensor, int]:
        self.ddim.set_timesteps(steps)
        x = torch.randn((n, self.channels, self.size, self.size), generator=generator).to(self.device)
        for t in self.ddim.timesteps:
            eps = self.net(x, torch.full((n,), int(t), device=self.device)).sample
            x = self.ddim.step(eps, t, x).prev_sample
        return x, len(self.ddim.timesteps)


BENCHES = {"genlab": GenlabBench, "diffusers": DiffusersBench}


# -- one measurement ----------------------------------------------------------------------------------
def measure(impl: str, mode: str, precision: str, args: argparse.Namespace, kwargs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Training, then DDIM sampling, of one network in one mode and precision; see the module docstring.
    Memory of both phases is counted from before the network was built."""
    torch._dynamo.reset()  # each configuration compiles afresh, and no cache limit carries over
    meter = MemoryMeter(device)
    meter.set_baseline()
    torch.manual_seed(args.seed)
    bench = BENCHES[impl](kwargs, args.channels, device)
    if args.channels_last:
        bench.to_channels_last()
    if mode == "compiled":
        bench.compile()
    training = measure_training(bench, precision, args, device, meter)
    meter.release()  # the optimizer state and the training batch are gone
    return {**training, **measure_sampling(bench, precision, args, device, meter)}


def measure_training(bench, precision: str, args: argparse.Namespace, device: torch.device, meter: MemoryMeter) -> dict[str, Any]:
    """Images/s and peak memory of forward + backward + AdamW step on random images in [0, 1]."""
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.rand(args.batch_size, args.channels, args.image_size, args.image_size, device=device).contiguous(memory_format=memory_format)
    bench.network.train()
    optimizer = torch.optim.AdamW(bench.network.parameters(), lr=args.lr)

    def train_step() -> None:
        with autocast(device, precision):
            loss = bench.loss(x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        train_step()
    with meter.phase():
        step_seconds = [timed(train_step, device) for _ in range(args.train_steps)]
    return {"train_images_per_s": args.batch_size / median(step_seconds), "train_step_s": step_seconds, "train_peak_mib": meter.peak_mib}


def measure_sampling(bench, precision: str, args: argparse.Namespace, device: torch.device, meter: MemoryMeter) -> dict[str, Any]:
    """Images/s and peak memory of DDIM sampling with args.sample_steps steps, in eval mode."""
    bench.network.eval()
    generator = torch.Generator().manual_seed(args.seed)
    nfe = 0

    def sample(steps: int) -> None:
        nonlocal nfe
        with autocast(device, precision):
            _, nfe = bench.sample(args.sample_batch, steps, generator)

    sample(2)  # warm-up: compiles the network at this batch size in eval mode
    with meter.phase():
        sample_seconds = [timed(lambda: sample(args.sample_steps), device) for _ in range(args.repeats)]
    return {
        "sample_images_per_s": args.sample_batch / median(sample_seconds),
        "sample_run_s": sample_seconds,
        "sample_nfe": nfe,
        "sample_peak_mib": meter.peak_mib,
    }


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
    for value, allowed in [(modes, ("eager", "compiled")), (precisions, ("fp32", "bf16")), (impls, tuple(BENCHES))]:
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
