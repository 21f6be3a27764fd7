"""Maps between discrete data and the continuous space densities live in.

Convention (shared with `genlab.nn.likelihood.bits_per_dim`): data with L levels per dimension,
stored as a + v (b - a) / (L - 1) for v in {0..L-1} within value_range (a, b), is dequantized into
bins of width w = (b - a) / L, level v owning [a + v w, a + (v + 1) w).
"""

from __future__ import annotations

import torch
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
