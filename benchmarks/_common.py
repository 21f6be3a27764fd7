"""Helpers shared by the benchmark scripts: devices, timing, peak memory, FLOP counts and the device's
matmul peak, the diffusers networks laid out like genlab's (UNet, DiT), the two libraries' diffusion
training and DDIM sampling behind one interface, tables and JSON. Benchmarks run on demand (the test
suite runs only `gpu.py --tiny`); see README.md.
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.data.dataset import Batch, DataSpec
from genlab.models.diffusion.model import DiffusionConfig, DiffusionModel
from genlab.nn.dit import DIT_PRESETS
from genlab.nn.unet import UNET_PRESETS, UNet, _level_sizes, norm_groups

MIB = 2**20


# -- devices and timing ----------------------------------------------------------------------------
def pick_device(name: str = "auto") -> torch.device:
    """"auto": CUDA when available, else the CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so a wall-clock reading covers the work and not only its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds that fn() takes, the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def ratio(numerator: float | None, denominator: float | None) -> float:
    """numerator / denominator, NaN where either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or not denominator > 0 or math.isnan(numerator):
        return math.nan
    return numerator / denominator


def autocast(device: torch.device, precision: str):
    """bf16: torch.autocast(bfloat16) on the device (weights and optimizer state stay fp32); fp32: nothing."""
    if precision == "fp32":
        return torch.autocast(device_type=device.type, enabled=False)
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision {precision!r}: use 'fp32' or 'bf16'")


# -- peak memory -----------------------------------------------------------------------------------
def _release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc malloc_trim), so the resident
    set reflects what is in use; on CUDA, empty the caching allocator."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the RSS may then include freed memory
        pass


def resident_bytes() -> int | None:
    """This process's resident set size now (Linux /proc/self/statm), or None where unreadable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class MemoryMeter:
    """Peak memory of a phase, in bytes above a baseline taken by `set_baseline()`.

    CUDA: torch.cuda.max_memory_allocated over the phase minus memory_allocated at the baseline:
    tensors only (weights, gradients, optimizer state, activations, workspaces), not the caching
    allocator's reserve nor the CUDA context.
    CPU: the peak resident set size (RSS) of the process over the phase, polled every millisecond from
    /proc/self/statm by a thread, minus the RSS at the baseline (after gc and malloc_trim). It counts
    everything the process touched: tensors, the allocator's slack, compiled code; a spike shorter than
    the polling interval can be missed. Not comparable with the CUDA number.

        meter = MemoryMeter(device); meter.set_baseline()   # before building the model
        ...build, warm up...
        with meter.phase(): ...timed work...
        meter.peak_mib
    """

    def __init__(self, device: torch.device, poll_s: float = 0.001) -> None:
        self.device, self.poll_s = device, poll_s
        self.baseline: int | None = None
        self.peak: int | None = None

    def set_baseline(self) -> None:
        _release_freed_memory()
        if self.device.type == "cuda":
            self.baseline = torch.cuda.memory_allocated(self.device)
        else:
            self.baseline = resident_bytes()

    def release(self) -> None:
        """Free what the last phase left unreferenced (keeps the baseline)."""
        _release_freed_memory()

    def phase(self) -> "_Phase":
        return _Phase(self)

    @property
    def peak_mib(self) -> float:
        if self.peak is None or self.baseline is None:
            return math.nan
        return (self.peak - self.baseline) / MIB


class _Phase:
    def __init__(self, meter: MemoryMeter) -> None:
        self.meter = meter
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, resident_bytes() or 0)
            time.sleep(self.meter.poll_s)

    def __enter__(self) -> "_Phase":
        device = self.meter.device
        if device.type == "cuda":
            synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        else:
            self._peak = resident_bytes() or 0
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        device = self.meter.device
        if device.type == "cuda":
            synchronize(device)
            self.meter.peak = torch.cuda.max_memory_allocated(device)
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self._peak = max(self._peak, resident_bytes() or 0)
            self.meter.peak = self._peak if resident_bytes() is not None else None


# -- networks --------------------------------------------------------------------------------------
def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def unet_kwargs(preset: str, image_size: int) -> dict[str, Any]:
    """The UNET_PRESETS entry moved to image_size x image_size, with self-attention at the same levels
    (by index) as at the preset's own size: "mnist" (28: attention at side 7, level 2) at 32 puts it at
    side 8. The same as the preset itself where the sizes agree."""
    if preset not in UNET_PRESETS:
        raise SystemExit(f"unknown UNet preset {preset!r}; choose one of {', '.join(UNET_PRESETS)}")
    kwargs = dict(UNET_PRESETS[preset])
    own = kwargs["image_size"]
    own_sides = [max(s) for s in _level_sizes((own, own) if isinstance(own, int) else tuple(own), len(kwargs["channel_mults"]))]
    new_sides = [max(s) for s in _level_sizes((image_size, image_size), len(kwargs["channel_mults"]))]
    kwargs["attention_resolutions"] = tuple(new_sides[own_sides.index(r)] for r in kwargs["attention_resolutions"])
    kwargs["image_size"] = image_size
    return kwargs


def attention_levels(kwargs: dict[str, Any]) -> list[int]:
    """Indices of the UNet levels (0 = full resolution) that have self-attention."""
    size = kwargs["image_size"]
    sides = [max(s) for s in _level_sizes((size, size) if isinstance(size, int) else tuple(size), len(kwargs["channel_mults"]))]
    return [level for level, side in enumerate(sides) if side in kwargs["attention_resolutions"]]


def diffusers_status(classes: Sequence[str] = ("UNet2DModel", "DDPMScheduler", "DDIMScheduler")) -> tuple[bool, str]:
    """(importable with these classes, version or the reason it is not)."""
    try:
        import diffusers

        for name in classes:
            getattr(diffusers, name)  # diffusers imports its classes lazily: a missing one fails here
    except Exception as error:  # ImportError, AttributeError, or a broken install raising something else
        return False, f"{type(error).__name__}: {error}"
    return True, diffusers.__version__


def diffusers_unet_like(kwargs: dict[str, Any], channels: int) -> nn.Module:
    """A diffusers UNet2DModel with genlab's UNet layout for the same `unet_kwargs`: widths
    base * mults, num_res_blocks ResNet blocks per level down (one more up), attention blocks at the
    same levels and in the middle, one head (attention_head_dim=None: head dim = width), time embedding
    of width 4 * base, the same dropout, and GroupNorm groups of genlab's widest-group rule at the base
    width (the count of groups has no parameters). Built from a config: nothing is downloaded.
    Its parameter count equals genlab's for the presets (both follow DDPM's layout)."""
    from diffusers import UNet2DModel

    levels = len(kwargs["channel_mults"])
    attention = set(attention_levels(kwargs))
    down = tuple("AttnDownBlock2D" if level in attention else "DownBlock2D" for level in range(levels))
    up = tuple("AttnUpBlock2D" if level in attention else "UpBlock2D" for level in reversed(range(levels)))
    return UNet2DModel(
        sample_size=kwargs["image_size"],
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(kwargs["base_channels"] * m for m in kwargs["channel_mults"]),
        layers_per_block=kwargs["num_res_blocks"],
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=None,
        norm_num_groups=norm_groups(kwargs["base_channels"]),
        dropout=kwargs["dropout"],
    )


def diffusers_dit_like(preset: str, *, input_size: int, channels: int, num_classes: int) -> nn.Module:
    """A diffusers DiTTransformer2DModel with the DIT_PRESETS entry's patch size, width, depth and heads
    (MLP ratio 4 in both), class-conditional on num_classes labels (plus the "no label" row), output
    channels = input channels (as genlab's DiffusionModel builds its DiT). Built from a config: nothing is
    downloaded. Each of diffusers' blocks has its own timestep MLP and label table (its AdaLayerNormZero),
    where the paper's DiT (and genlab's) has one for the network, so diffusers has more parameters; it
    runs that timestep MLP depth + 1 times instead of once, under 0.1% more FLOPs on 32x32x4 latents."""
    from diffusers import DiTTransformer2DModel

    if preset not in DIT_PRESETS:
        raise SystemExit(f"unknown DiT preset {preset!r}; choose one of {', '.join(DIT_PRESETS)}")
    fields = DIT_PRESETS[preset]
    return DiTTransformer2DModel(
        num_attention_heads=fields["num_heads"],
        attention_head_dim=fields["hidden_size"] // fields["num_heads"],
        in_channels=channels,
        out_channels=channels,
        num_layers=fields["depth"],
        sample_size=input_size,
        patch_size=fields["patch_size"],
        num_embeds_ada_norm=num_classes,
    )


def check_parameter_match(genlab_count: int, diffusers_count: int, tolerance: float = 0.05) -> str:
    """A line stating both counts and whether they agree within `tolerance`."""
    gap = diffusers_count / genlab_count - 1.0
    verdict = "within" if abs(gap) <= tolerance else "NOT within"
    return (
        f"parameters: genlab {genlab_count:,}, diffusers {diffusers_count:,} "
        f"({gap:+.2%}, {verdict} {tolerance:.0%})"
    )


# -- the two libraries' diffusion training and sampling behind one interface ----------------------------
class GenlabBench:
    """genlab's DiffusionModel (ddpm defaults: linear schedule, 1000 steps, eps prediction) around a
    network; subclasses build the model. `loss(x)` is `DiffusionModel.loss` (labels drawn at random for a
    class-conditional model, 10% of them replaced by the "no label" token, genlab's default), `sample`
    its DDIM, `forward(x)` one call of the bare network (for FLOP counts)."""

    name = "genlab"
    model: DiffusionModel
    num_classes: int | None = None

    @property
    def network(self) -> nn.Module:
        return self.model.net

    def compile(self, **options: Any) -> None:
        self.model.net = torch.compile(self.model.net, **options)

    def compile_blocks(self, **options: Any) -> None:
        """torch.compile each transformer block in place (regional compilation: the blocks share one
        compiled graph, so the compile costs one block whatever the depth)."""
        for block in self.model.net.blocks:
            block.compile(**options)

    def to_channels_last(self) -> None:
        self.model.to(memory_format=torch.channels_last)

    def _labels(self, batch: int, device: torch.device) -> Tensor | None:
        return None if self.num_classes is None else torch.randint(0, self.num_classes, (batch,), device=device)

    def loss(self, x: Tensor) -> Tensor:
        return self.model.loss(Batch(x, self._labels(x.shape[0], x.device))).total

    def sample(self, n: int, steps: int, generator: torch.Generator) -> tuple[Tensor, int]:
        result = self.model.generate(n, generator=generator, sampler="ddim", steps=steps)
        return result.x, result.nfe

    def forward(self, x: Tensor) -> Tensor:
        noise_level = 1000.0 * torch.rand(x.shape[0], device=x.device)
        return self.model.net(x, noise_level, self._labels(x.shape[0], x.device))


class GenlabUNetBench(GenlabBench):
    """genlab's DiffusionModel whose network is the UNet of `kwargs` (a preset moved to the benchmark's
    image size, `unet_kwargs`)."""

    def __init__(self, kwargs: dict[str, Any], channels: int, device: torch.device) -> None:
        class Model(DiffusionModel):
            def _build_network(self, config: DiffusionConfig, spec: DataSpec) -> nn.Module:
                return UNet(**kwargs, in_channels=channels, out_channels=channels)

        size = kwargs["image_size"]
        spec = DataSpec("random-images", kind="image", shape=(channels, size, size), value_range=(0.0, 1.0), levels=256)
        self.model = Model(DiffusionConfig(), spec).to(device)


class GenlabDiTBench(GenlabBench):
    """genlab's class-conditional DiffusionModel with net="dit" and a DIT_PRESETS preset on
    channels x input_size x input_size latents (`genlab.create("ddpm", net="dit", preset=...,
    class_conditional=True)` on such data)."""

    def __init__(self, preset: str, *, input_size: int, channels: int, num_classes: int, device: torch.device) -> None:
        spec = DataSpec("random-latents", kind="image", shape=(channels, input_size, input_size), value_range=(0.0, 1.0), num_classes=num_classes)
        self.num_classes = num_classes
        self.model = DiffusionModel(DiffusionConfig(net="dit", preset=preset, class_conditional=True), spec).to(device)


class DiffusersBench:
    """A diffusers network trained with DDPMScheduler (linear betas, 1000 steps, eps prediction: the
    loss of genlab's ddpm written with `add_noise` and an MSE) and sampled with DDIMScheduler;
    subclasses build the network and say how to call it."""

    name = "diffusers"
    num_classes: int | None = None

    def __init__(self, network: nn.Module, shape: tuple[int, int, int], device: torch.device) -> None:
        from diffusers import DDIMScheduler, DDPMScheduler

        self.module = network.to(device)
        self.net: nn.Module = self.module  # the compiled wrapper once compiled
        self.shape, self.device = shape, device
        self.train_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
        # "trailing": steps from t = 999 down, the grid genlab's DDIM uses (Lin et al. 2024)
        self.ddim = DDIMScheduler.from_config(self.train_scheduler.config, timestep_spacing="trailing")

    @property
    def network(self) -> nn.Module:
        return self.module

    def compile(self, **options: Any) -> None:
        self.net = torch.compile(self.module, **options)

    def to_channels_last(self) -> None:
        self.module.to(memory_format=torch.channels_last)

    def predict(self, net: nn.Module, x_t: Tensor, t: Tensor) -> Tensor:
        """The network's eps prediction at x_t (B, C, H, W) and integer steps t (B,)."""
        raise NotImplementedError

    def loss(self, x: Tensor) -> Tensor:
        x0 = 2.0 * x - 1.0  # [0, 1] -> [-1, 1]
        t = torch.randint(0, self.train_scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.train_scheduler.add_noise(x0, noise, t)
        return F.mse_loss(self.predict(self.net, x_t, t).float(), noise)

    @torch.no_grad()
    def sample(self, n: int, steps: int, generator: torch.Generator) -> tuple[Tensor, int]:
        self.ddim.set_timesteps(steps)
        x = torch.randn((n, *self.shape), generator=generator).to(self.device)
        for t in self.ddim.timesteps:
            eps = self.predict(self.net, x, torch.full((n,), int(t), device=self.device))
            x = self.ddim.step(eps, t, x).prev_sample
        return x, len(self.ddim.timesteps)

    def forward(self, x: Tensor) -> Tensor:
        return self.predict(self.module, x, torch.randint(0, 1000, (x.shape[0],), device=x.device))


class DiffusersUNetBench(DiffusersBench):
    """diffusers' UNet2DModel laid out like genlab's UNet (`diffusers_unet_like`)."""

    def __init__(self, kwargs: dict[str, Any], channels: int, device: torch.device) -> None:
        size = kwargs["image_size"]
        super().__init__(diffusers_unet_like(kwargs, channels), (channels, size, size), device)

    def predict(self, net: nn.Module, x_t: Tensor, t: Tensor) -> Tensor:
        return net(x_t, t).sample


class DiffusersDiTBench(DiffusersBench):
    """diffusers' DiTTransformer2DModel of a DIT_PRESETS preset (`diffusers_dit_like`), class-conditional:
    labels drawn at random, 10% of them dropped to the "no label" row by diffusers itself in training."""

    def __init__(self, preset: str, *, input_size: int, channels: int, num_classes: int, device: torch.device) -> None:
        network = diffusers_dit_like(preset, input_size=input_size, channels=channels, num_classes=num_classes)
        super().__init__(network, (channels, input_size, input_size), device)
        self.num_classes = num_classes

    def compile_blocks(self, **options: Any) -> None:
        """torch.compile each transformer block in place (as `GenlabBench.compile_blocks`)."""
        for block in self.module.transformer_blocks:
            block.compile(**options)

    def predict(self, net: nn.Module, x_t: Tensor, t: Tensor) -> Tensor:
        labels = torch.randint(0, self.num_classes, (x_t.shape[0],), device=x_t.device)
        return net(x_t, timestep=t, class_labels=labels).sample


UNET_BENCHES = {"genlab": GenlabUNetBench, "diffusers": DiffusersUNetBench}
DIT_BENCHES = {"genlab": GenlabDiTBench, "diffusers": DiffusersDiTBench}


def measure_training(
    bench: GenlabBench | DiffusersBench,
    precision: str,
    *,
    shape: Sequence[int],
    lr: float,
    warmup: int,
    steps: int,
    device: torch.device,
    meter: MemoryMeter,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Images/s and peak memory of one training step on random inputs in [0, 1] of `shape` (B, C, H, W):
    the loss under `autocast(precision)`, its backward, an AdamW step and zeroing the gradients. `warmup`
    untimed steps (compilation, allocator growth), then the median wall time of `steps` timed ones."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.rand(*shape, device=device).contiguous(memory_format=memory_format)
    bench.network.train()
    optimizer = torch.optim.AdamW(bench.network.parameters(), lr=lr)

    def train_step() -> None:
        with autocast(device, precision):
            loss = bench.loss(x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    warmup_seconds = timed(lambda: [train_step() for _ in range(warmup)], device)  # compilation included
    with meter.phase():
        step_seconds = [timed(train_step, device) for _ in range(steps)]
    return {
        "train_images_per_s": shape[0] / median(step_seconds), "train_step_s": step_seconds,
        "train_warmup_s": warmup_seconds, "train_peak_mib": meter.peak_mib,
    }  # fmt: skip


def measure_sampling(
    bench: GenlabBench | DiffusersBench,
    precision: str,
    *,
    n: int,
    steps: int,
    repeats: int,
    seed: int,
    device: torch.device,
    meter: MemoryMeter,
) -> dict[str, Any]:
    """Images/s and peak memory of DDIM sampling (eta = 0) of n images with `steps` steps, in eval mode:
    an untimed 2-step run (compiles the network at this batch size in eval mode), then the median wall
    time of `repeats` timed runs."""
    bench.network.eval()
    generator = torch.Generator().manual_seed(seed)
    nfe = 0

    def sample(steps: int) -> None:
        nonlocal nfe
        with autocast(device, precision):
            _, nfe = bench.sample(n, steps, generator)

    sample(2)
    with meter.phase():
        sample_seconds = [timed(lambda: sample(steps), device) for _ in range(repeats)]
    return {"sample_images_per_s": n / median(sample_seconds), "sample_run_s": sample_seconds, "sample_nfe": nfe, "sample_peak_mib": meter.peak_mib}


# -- FLOPs and the device's peak -----------------------------------------------------------------------
def _sdpa_flops(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of fn() as torch.utils.flop_counter.FlopCounterMode counts them: 2 per multiply-add of every
    matrix product, convolution and attention (Q K^T and its product with V); elementwise operations,
    norms and softmax count nothing (the usual convention of MFU). Run without gradients. On the CPU,
    torch's own attention kernel is not in FlopCounterMode's table, so it is added here."""
    from torch.utils.flop_counter import FlopCounterMode

    custom = {}
    cpu_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_attention is not None:
        custom[cpu_attention] = _sdpa_flops
    counter = FlopCounterMode(display=False, custom_mapping=custom)
    with counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, *, size: int, iterations: int, repeats: int = 5, dtype: torch.dtype = torch.bfloat16) -> dict[str, Any]:
    """The device's attainable matmul rate: `size` x `size` products in `dtype`, 2 size^3 FLOPs each,
    timed as `repeats` runs of `iterations` back-to-back products (after 3 untimed ones); the fastest
    run counts. Returns {"flops_per_s", "size", "dtype", "seconds_per_matmul"}."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    out = torch.empty(size, size, device=device, dtype=dtype)

    def run(count: int) -> None:
        for _ in range(count):
            torch.mm(a, b, out=out)

    run(3)
    best = min(timed(lambda: run(iterations), device) for _ in range(repeats)) / iterations
    return {"flops_per_s": 2 * size**3 / best, "size": size, "dtype": str(dtype), "seconds_per_matmul": best}


# -- output ----------------------------------------------------------------------------------------
def add_run_options(parser, *, threads: int = 2) -> None:
    """The options of the scripts that train genlab models as a user would: --steps, --set,
    --batch-size, --threads, --quick (a smoke run) and --json."""
    parser.add_argument("--steps", type=int, default=None, help="genlab training steps (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=None, help="genlab batch size (default: the model's)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="genlab model config field (repeatable)")
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budgets; its numbers mean nothing")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the settings and every number to PATH")


def rank_within_groups(groups: torch.Tensor) -> torch.Tensor:
    """Each item's position among the items of its group, in order: (N,) labels -> (N,) 0, 1, 2, ...
    (the Olivetti faces' first k images of each person are those of rank < k)."""
    rank = torch.zeros(len(groups), dtype=torch.long)
    for group in groups.unique():  # 40 people: the set-up of a benchmark, not a hot path
        rows = torch.nonzero(groups == group).flatten()
        rank[rows] = torch.arange(len(rows))
    return rank


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned columns (left-aligned first column)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))

    return "\n".join([line([str(h) for h in headers]), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def write_json(path: str | os.PathLike | None, payload: dict[str, Any], *, quiet: bool = False) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")
    if not quiet:
        print(f"wrote {path}")


def _jsonable(value: Any) -> Any:
    """value with NaN as null (strict JSON) and devices, dtypes and paths as strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (torch.device, torch.dtype, Path)):
        return str(value)
    return value


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    import platform

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    available, version = diffusers_status()
    info["diffusers"] = version if available else None
    return info
