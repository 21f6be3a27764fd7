"""Kernels between samples and the unbiased MMD^2 estimator: building blocks of a loss (the WAE's
MMD penalty) and of metrics (`genlab.metrics.kernels`: MMD, KID).

For samples X = (x_1..x_n) ~ P and Y = (y_1..y_m) ~ Q, the unbiased estimator of
MMD^2(P, Q) = E k(x, x') + E k(y, y') - 2 E k(x, y)  (Gretton et al. 2012, eq. 3) is

    MMD_u^2 = sum_{i != j} k(x_i, x_j) / (n (n-1)) + sum_{i != j} k(y_i, y_j) / (m (m-1))
              - 2 sum_{i, j} k(x_i, y_j) / (n m).

It can be negative when P = Q. Kernel matrices are summed in row blocks so memory stays bounded
for large n and m.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from genlab.errors import ConfigError, DataError

Kernel = Callable[[Tensor, Tensor], Tensor]

_BLOCK_ELEMENTS = 1 << 22  # kernel entries held at once: 32 MiB in float64


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """|x_i - y_j|^2 for x (N, D), y (M, D) -> (N, M), clamped at 0 against round-off."""
    d2 = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None, :] - 2.0 * x @ y.T
    return d2.clamp_min_(0.0)


def rbf_kernel(bandwidths: Sequence[float]) -> Kernel:
    """k(x, y) = sum_h exp(-|x - y|^2 / (2 h^2)), a sum of Gaussian kernels of widths h."""
    inverse_two_h2 = [1.0 / (2.0 * float(h) ** 2) for h in bandwidths]

    def kernel(x: Tensor, y: Tensor) -> Tensor:
        d2 = squared_distances(x, y)
        return sum(torch.exp(-c * d2) for c in inverse_two_h2)

    return kernel


def polynomial_kernel(dim: int, *, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> Kernel:
    """k(x, y) = (gamma x.y + coef0)^degree, gamma = 1/dim by default (KID's kernel)."""
    g = 1.0 / dim if gamma is None else float(gamma)

    def kernel(x: Tensor, y: Tensor) -> Tensor:
        return (g * (x @ y.T) + coef0).pow(degree)

    return kernel


def inverse_multiquadratic_kernel(scales: Sequence[float]) -> Kernel:
    """k(x, y) = sum_C C / (C + |x - y|^2), the inverse multiquadratic kernel, over the constants C
    in `scales` (Tolstikhin et al. 2018, sec. 4, who take C = 2 D sigma_z^2 for a prior N(0, sigma_z^2 I)).
    Its heavy tails keep a gradient between distant samples, where a Gaussian kernel's vanishes."""
    constants = [float(c) for c in scales]
    if not constants or any(not (c > 0) for c in constants):
        raise ConfigError(f"inverse multiquadratic kernel scales must be positive, got {constants}")

    def kernel(x: Tensor, y: Tensor) -> Tensor:
        d2 = squared_distances(x, y)
        return sum(c / (c + d2) for c in constants)

    return kernel


def _kernel_sum(kernel: Kernel, x: Tensor, y: Tensor | None) -> Tensor:
    """sum_{i,j} k(x_i, y_j); with y None, sum_{i != j} k(x_i, x_j). Row blocks bound memory."""
    other = x if y is None else y
    rows = max(1, _BLOCK_ELEMENTS // max(1, other.shape[0]))
    total = x.new_zeros(())
    for start in range(0, x.shape[0], rows):
        block = kernel(x[start : start + rows], other)  # (rows, M)
        total = total + block.sum()
        if y is None:
            # the diagonal from the same block, so round-off in k(x, x) cancels exactly
            total = total - block[:, start : start + rows].diagonal().sum()
    return total


def unbiased_mmd2(x: Tensor, y: Tensor, kernel: Kernel) -> Tensor:
    """MMD_u^2 (Gretton et al. 2012, eq. 3) of x (n, D), y (m, D), n, m >= 2, as a 0-d float64."""
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise DataError(f"the unbiased MMD^2 needs at least 2 samples on each side, got {n} and {m}")
    k_xx = _kernel_sum(kernel, x, None) / (n * (n - 1))
    k_yy = _kernel_sum(kernel, y, None) / (m * (m - 1))
    k_xy = _kernel_sum(kernel, x, y) / (n * m)
    return k_xx + k_yy - 2.0 * k_xy
