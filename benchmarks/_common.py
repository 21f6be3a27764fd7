"""Helpers shared by the benchmark scripts: devices, timing, peak memory, a diffusers UNet laid out
like genlab's, tables and JSON. Benchmarks run on demand (never in the test suite); see README.md.
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
from torch import nn

from genlab.nn.unet import UNET_PRESETS, _level_sizes, norm_groups

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


def diffusers_status() -> tuple[bool, str]:
    """(importable, version or the reason it is not)."""
    try:
        import diffusers
        from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel  # noqa: F401  (the classes the scripts use)
    except Exception as error:  # ImportError, or a broken install raising something else
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


def check_parameter_match(genlab_count: int, diffusers_count: int, tolerance: float = 0.05) -> str:
    """A line stating both counts and whether they agree within `tolerance`."""
    gap = diffusers_count / genlab_count - 1.0
    verdict = "within" if abs(gap) <= tolerance else "NOT within"
    return (
        f"parameters: genlab {genlab_count:,}, diffusers {diffusers_count:,} "
        f"({gap:+.2%}, {verdict} {tolerance:.0%})"
    )


# -- output ----------------------------------------------------------------------------------------
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


def write_json(path: str | os.PathLike | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")
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
