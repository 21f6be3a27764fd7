"""Maps between discrete data and the continuous space densities live in, and a Gaussian blur of images.

Convention (shared with `genlab.nn.likelihood.bits_per_dim`): data with L levels per dimension,
stored as a + v (b - a) / (L - 1) for v in {0..L-1} within value_range (a, b), is dequantized into
bins of width w = (b - a) / L, level v owning [a + v w, a + (v + 1) w).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.data.dataset import DataSpec


def levels_of(x: Tensor, spec: DataSpec) -> Tensor:
    """The integer level v of stored values x, (B, ...) long."""
    low, high = spec.value_range
    return torch.round((x - low) / (high - low) * (spec.levels - 1)).long().clamp_(0, spec.levels - 1)


def dequantize(x: Tensor, spec: DataSpec, generator: torch.Generator | None = None) -> Tensor:
    """x' = a + (v + u) (b - a) / L, u ~ U[0, 1)^D: uniform dequantization (Theis et al. 2016, sec. 3.1).

    A density p on x' bounds the discrete NLL: -log P(v) <= E_u[-log p(x')] - D log w.
    Continuous data (spec.levels None) is returned unchanged. x: (B, *spec.shape).
    """
    if spec.levels is None:
        return x
    low, high = spec.value_range
    u = torch.rand(x.shape, generator=generator, device=x.device if generator is None else generator.device).to(x.device, x.dtype)
    return low + (levels_of(x, spec).to(x.dtype) + u) * ((high - low) / spec.levels)


def quantize(x: Tensor, spec: DataSpec) -> Tensor:
    """Inverse of `dequantize` for samples: the bin holding x', returned as a stored value a + v (b-a)/(L-1)."""
    if spec.levels is None:
        return x
    low, high = spec.value_range
    v = torch.floor((x - low) / (high - low) * spec.levels).clamp_(0, spec.levels - 1)
    return low + v * ((high - low) / (spec.levels - 1))


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Images (..., H, W) convolved with a normalised Gaussian of standard deviation `sigma` pixels,
    separably along H and W; the kernel spans ceil(3 sigma) pixels each side, and the borders are
    padded by replication (so a constant image stays constant). sigma = 0 returns x."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(device=x.device, dtype=x.dtype)
    shape = x.shape
    flat = x.reshape(-1, 1, *shape[-2:])
    flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernel.view(1, 1, 1, -1))
    flat = F.conv2d(flat, kernel.view(1, 1, -1, 1))
    return flat.reshape(shape)
