"""Per-dimension standardisation x_norm = (x - shift) / scale, for models that work in a unit-scale
space (diffusion: the prior N(0, I) at t_max; GANs on vectors and tables). shift and scale are two
buffers of the model itself, `data_shift` and `data_scale`, so they are saved with its weights."""

from __future__ import annotations

import torch
from torch import Tensor

MIN_SCALE = 1e-6  # a constant dimension is left as it is, not divided by zero


class Standardizer:
    """Mixin for an nn.Module: `register_standardization` once in __init__, `fit_standardization` on
    the training data, then `standardize` / `unstandardize`. Shapes: x (B, *shape), buffers (*shape)."""

    data_shift: Tensor
    data_scale: Tensor

    def register_standardization(self, shift: Tensor, scale: Tensor) -> None:
        self.register_buffer("data_shift", shift)  # type: ignore[attr-defined]
        self.register_buffer("data_scale", scale)  # type: ignore[attr-defined]

    @torch.no_grad()
    def fit_standardization(self, x: Tensor) -> None:
        """shift = the mean of x over the batch, scale = its standard deviation (at least MIN_SCALE)."""
        self.data_shift.copy_(x.mean(0))
        self.data_scale.copy_(x.std(0).clamp_min(MIN_SCALE))

    def standardize(self, x: Tensor) -> Tensor:
        return (x - self.data_shift) / self.data_scale

    def unstandardize(self, x: Tensor) -> Tensor:
        return x * self.data_scale + self.data_shift
