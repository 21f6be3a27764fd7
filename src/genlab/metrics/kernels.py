"""Maximum mean discrepancy as a metric: MMD^2 with RBF (median-heuristic widths) or polynomial
kernels, and KID, the polynomial-kernel MMD^2 of features averaged over subsets (Bińkowski et al.
2018). The kernels and the unbiased estimator (Gretton et al. 2012, eq. 3) live in
`genlab.nn.kernels`, which models use too (the WAE's MMD penalty).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from genlab.errors import ConfigError, DataError
from genlab.nn.kernels import (  # noqa: F401  (re-exported: the metric's kernels)
    Kernel,
    inverse_multiquadratic_kernel,
    polynomial_kernel,
    rbf_kernel,
    squared_distances,
    unbiased_mmd2,
)


def _as_matrix(x: Tensor | np.ndarray, name: str) -> Tensor:
    x = torch.as_tensor(x).detach()
    if x.ndim == 1:
        x = x[:, None]  # a 1-D sample of scalars
    if x.ndim != 2:
        raise DataError(f"{name} must have shape (N, D), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise DataError(f"{name} has NaN or infinite values")
    return x.to(torch.float64)


def median_bandwidths(x: Tensor, multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> list[float]:
    """Multiples of the median pairwise distance within x (on at most 1000 points of x)."""
    sample = x[:1000]
    i, j = torch.triu_indices(sample.shape[0], sample.shape[0], offset=1)
    distances = squared_distances(sample, sample)[i, j].sqrt()
    median = torch.quantile(distances, 0.5).item()  # numpy's median: the mean of the middle two
    if median <= 0:
        median = 1.0  # all points equal: any width gives the same, finite kernel
    return [median * c for c in multipliers]


def mmd(
    x: Tensor | np.ndarray,
    y: Tensor | np.ndarray,
    *,
    kernel: Literal["rbf", "polynomial"] = "rbf",
    bandwidths: Sequence[float] | Literal["median"] = "median",
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) between samples x (n, D) and y (m, D).

    kernel="rbf": k(x, y) = sum_h exp(-|x - y|^2 / (2 h^2)) over `bandwidths` h. The default
    "median" takes h = c * median pairwise distance within x for c in (0.25, 0.5, 1, 2, 4); pass x
    as the reference (real) sample so the kernel does not depend on the model's samples, or pass
    fixed bandwidths to compare numbers across runs.
    kernel="polynomial": k(x, y) = (gamma x.y + coef0)^degree, gamma = 1/D by default.

    1-D inputs (n,) are read as n scalars. Computed in float64. Can be slightly negative when the
    two distributions are equal.
    """
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    if x.shape[1] != y.shape[1]:
        raise DataError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    if kernel == "rbf":
        if isinstance(bandwidths, str):
            if bandwidths != "median":
                raise ConfigError(f"bandwidths must be 'median' or a list of positive floats, got {bandwidths!r}")
            bandwidths = median_bandwidths(x)
        if len(bandwidths) == 0 or any(not (h > 0) for h in bandwidths):
            raise ConfigError(f"bandwidths must be positive, got {list(bandwidths)}")
        k = rbf_kernel(bandwidths)
    elif kernel == "polynomial":
        k = polynomial_kernel(x.shape[1], degree=degree, gamma=gamma, coef0=coef0)
    else:
        raise ConfigError(f"kernel must be 'rbf' or 'polynomial', got {kernel!r}")
    return unbiased_mmd2(x, y, k).item()


def kid(
    features_real: Tensor | np.ndarray,
    features_fake: Tensor | np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD^2 with the polynomial
    kernel k(x, y) = (x.y / d + 1)^3 between features (N, d) and (M, d), averaged over `subsets`
    random subsets of `subset_size` from each side (drawn without replacement within a subset).

    Returns (mean, std) over subsets; std uses ddof=0 as the reference implementation. subset_size
    is clipped to min(N, M). KID is unbiased, so with equal distributions the mean is near 0 and can
    be slightly negative. `generator` makes the subsets reproducible (default: seed 0).
    """
    x, y = _as_matrix(features_real, "features_real"), _as_matrix(features_fake, "features_fake")
    if x.shape[1] != y.shape[1]:
        raise DataError(f"real and fake features have different dimensions: {x.shape[1]} and {y.shape[1]}")
    if subsets < 1:
        raise ConfigError(f"subsets must be >= 1, got {subsets}")
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise DataError(f"KID needs at least 2 samples on each side, got {x.shape[0]} and {y.shape[0]}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    k = polynomial_kernel(x.shape[1], degree=degree, gamma=gamma, coef0=coef0)
    values = torch.empty(subsets, dtype=torch.float64)
    for s in range(subsets):
        i = torch.randperm(x.shape[0], generator=generator)[:size]
        j = torch.randperm(y.shape[0], generator=generator)[:size]
        values[s] = unbiased_mmd2(x[i], y[j], k)
    return values.mean().item(), values.std(correction=0).item()
