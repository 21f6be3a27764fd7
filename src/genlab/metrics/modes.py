"""Mode coverage on 2D Gaussian mixtures: the number of modes a generator covers and the share of
its samples that are of high quality.

Protocol (Metz et al. 2017, unrolled GANs, on `ring8`; Srivastava et al. 2017, VEEGAN, sec. 5.1,
on `ring8` and `grid25`, 2,500 samples): a sample is *high quality* when it lies within 3
standard deviations of the centre of its nearest mixture component; a mode is *covered* when at
least `min_samples` high-quality samples fall to it. Where a threshold on the count is used
(Lin et al. 2018, PacGAN, with VEEGAN's setting) it is 20 of 2,500 samples, a fifth of a grid25
mode's expected 100; `mode_coverage` scales that rule to other sample sizes: min_samples =
max(1, round(20 n / 2500)).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from genlab.data.toy import gaussian_mixture
from genlab.errors import DataError

N_STD = 3.0
# PacGAN's threshold: 20 high-quality samples of 2,500 make a mode covered
REFERENCE_COUNT, REFERENCE_SAMPLES = 20, 2500


@dataclasses.dataclass(frozen=True)
class ModeCoverage:
    """modes: the number of covered components; high_quality: the share of samples within
    n_std standard deviations of their nearest centre; counts (K,) high-quality samples per mode;
    min_samples: the count that made a mode covered."""

    modes: int
    high_quality: float
    counts: Tensor
    min_samples: int


def default_min_samples(n: int) -> int:
    """PacGAN's 20 of 2,500 scaled to n samples: max(1, round(20 n / 2500))."""
    return max(1, round(REFERENCE_COUNT * n / REFERENCE_SAMPLES))


def mode_coverage(samples: Tensor, centers: Tensor, std: float, *, min_samples: int | None = None, n_std: float = N_STD) -> ModeCoverage:
    """Modes covered and the high-quality share of `samples` (n, 2) for a mixture of isotropic
    Gaussians with `centers` (K, 2) and standard deviation `std` (see the module docstring).

    >>> import torch
    >>> centers = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
    >>> result = mode_coverage(torch.tensor([[0.1, 0.0], [0.0, 0.2], [2.5, 0.0]]), centers, 0.1, min_samples=1)
    >>> result.modes, round(result.high_quality, 3), result.counts.tolist()
    (1, 0.667, [2, 0])
    """
    samples = samples.reshape(len(samples), -1).double()
    centers = centers.to(samples)
    if samples.shape[1] != centers.shape[1]:
        raise DataError(f"samples have {samples.shape[1]} coordinates but the mode centres {centers.shape[1]}")
    n = len(samples)
    min_samples = default_min_samples(n) if min_samples is None else min_samples
    distance, nearest = torch.cdist(samples, centers).min(dim=1)  # (n, K) -> (n,), (n,)
    good = distance <= n_std * std
    counts = torch.bincount(nearest[good], minlength=len(centers))
    modes = int((counts >= min_samples).sum())
    return ModeCoverage(modes, float(good.double().mean()) if n else 0.0, counts, min_samples)


def is_gaussian_mixture(name: str) -> bool:
    """Whether `name` is one of genlab's Gaussian-mixture toys (8gaussians, grid25, ring8)."""
    try:
        gaussian_mixture(name)
    except DataError:
        return False
    return True


def toy_mode_metrics(samples: Tensor, name: str) -> dict[str, float]:
    """{"modes": modes covered, "high_quality": share} of samples (n, 2) against the toy `name`."""
    centers, std = gaussian_mixture(name)
    result = mode_coverage(samples, centers, std)
    return {"modes": float(result.modes), "high_quality": result.high_quality}
