"""Two-dimensional toy densities, the common test beds of flows, GANs and diffusion models.

Seven follow the FFJORD code (Grathwohl et al. 2019, `lib/toy_data.py`), with the same constants,
written here as vectorised torch draws from a `torch.Generator`:

=============  ================================================================================
name           definition (u ~ U(0, 1), e ~ N(0, I); labels in brackets)
=============  ================================================================================
moons          scikit-learn's two half circles: outer (cos a, sin a), inner (1 - cos a,
               0.5 - sin a), a evenly spaced in [0, pi] (n // 2 outer, the rest inner); plus
               N(0, 0.1^2) noise; then x * 2 + (-1, -0.2). [0 outer, 1 inner]
circles        two circles of radius 1 and 0.5, angles evenly spaced in [0, 2 pi) (n // 2 outer);
               plus N(0, 0.08^2) noise; then x * 3. [0 outer, 1 inner]
swissroll      t = 1.5 pi (1 + 2u); x = (t cos t + e1, t sin t + e2) / 5 (scikit-learn's swiss roll,
               noise 1, seen from its axis).
8gaussians     (4 c_k + 0.5 e) / 1.414 for k ~ U{0..7}, c_k the unit vectors (1,0), (-1,0), (0,1),
               (0,-1), (+-1/sqrt 2, +-1/sqrt 2): a mixture of 8 equal Gaussians on a circle of
               radius 4 / 1.414 (~2 sqrt 2), std 0.5 / 1.414 (~0.354). [k]
checkerboard   x1 = 4u - 2; x2 = u' - 2 b + (floor(x1) mod 2), b ~ Bernoulli(1/2); then x * 2:
               uniform on the 8 dark squares (side 2) of a 4 x 4 board on [-4, 4)^2, those cells
               (i, j) = (floor(x/2), floor(y/2)) with i + j even; density 1/32 there.
pinwheel       5 arms: f = (1 + 0.3 e1, 0.1 e2); angle = 2 pi k / 5 + 0.25 exp(f1);
               x = 2 (f1 cos + f2 sin, -f1 sin + f2 cos)(angle). Classes balanced. [k]
rings          4 circles of radius 3, 2.25, 1.5, 0.75 (n // 4 points each, the rest on the
               innermost), angles evenly spaced, plus N(0, 0.08^2) noise. [ring, 0 = outermost]
=============  ================================================================================

and two mixtures used to count dropped modes:

- grid25: 25 Gaussians centred on {-4, -2, 0, 2, 4}^2, std 0.05 (VEEGAN, Srivastava et al. 2017).
- ring8: 8 Gaussians on a circle of radius 2, std 0.02 (unrolled GAN, Metz et al. 2017).

Where FFJORD's sampler uses fixed angles (moons, circles, rings) the points are shuffled, as in
scikit-learn, so any prefix of a sample is a fair draw. Pinwheel gives exactly n points (FFJORD
rounds n down to a multiple of 5).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from genlab.data.dataset import DataSpec, Dataset
from genlab.data.splits import seeded_splits
from genlab.errors import DataError

_FFJORD_SCALE = 1.414  # FFJORD divides 8gaussians by this literal, not by sqrt(2)

# The box (lo, hi) used as value_range: it holds the support, or every mixture component out to
# at least 4.5 standard deviations (a fraction below 1e-5 of the samples lies outside).
VALUE_RANGES: dict[str, tuple[float, float]] = {
    "moons": (-4.0, 4.0),
    "circles": (-4.5, 4.5),
    "swissroll": (-4.5, 4.5),
    "8gaussians": (-4.5, 4.5),
    "checkerboard": (-4.0, 4.0),
    "pinwheel": (-5.0, 5.0),
    "rings": (-4.0, 4.0),
    "grid25": (-4.5, 4.5),
    "ring8": (-2.5, 2.5),
}

DESCRIPTIONS: dict[str, str] = {
    "moons": "2D: two interleaved half circles (FFJORD)",
    "circles": "2D: two concentric circles (FFJORD)",
    "swissroll": "2D: swiss roll spiral (FFJORD)",
    "8gaussians": "2D: 8 Gaussians on a circle, known density (FFJORD)",
    "checkerboard": "2D: uniform on a 4x4 checkerboard's 8 squares, known density (FFJORD)",
    "pinwheel": "2D: 5-armed pinwheel (FFJORD)",
    "rings": "2D: 4 concentric noisy rings (FFJORD)",
    "grid25": "2D: 25 Gaussians on a 5x5 grid, std 0.05, known density (VEEGAN)",
    "ring8": "2D: 8 Gaussians on a circle of radius 2, std 0.02, known density (unrolled GAN)",
}

TOY_NAMES: tuple[str, ...] = tuple(VALUE_RANGES)

NUM_CLASSES: dict[str, int | None] = {
    "moons": 2,
    "circles": 2,
    "swissroll": None,
    "8gaussians": 8,
    "checkerboard": None,
    "pinwheel": 5,
    "rings": 4,
    "grid25": 25,
    "ring8": 8,
}


# -- equal-weight Gaussian mixtures ------------------------------------------------------------
def gaussian_mixture(name: str) -> tuple[Tensor, float]:
    """(centres (K, 2) float64, isotropic std) of the toy `name` when it is a Gaussian mixture
    with equal weights: 8gaussians, grid25, ring8."""
    if name == "8gaussians":
        s = 1.0 / math.sqrt(2.0)
        unit = torch.tensor([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)], dtype=torch.float64)
        return 4.0 * unit / _FFJORD_SCALE, 0.5 / _FFJORD_SCALE
    if name == "grid25":
        values = torch.arange(-4.0, 4.1, 2.0, dtype=torch.float64)
        return torch.cartesian_prod(values, values), 0.05  # centre k = (values[k // 5], values[k % 5])
    if name == "ring8":
        angle = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
        return 2.0 * torch.stack([angle.cos(), angle.sin()], dim=1), 0.02
    mixtures = ", ".join(n for n in TOY_NAMES if _is_mixture(n))
    raise DataError(f"toy {name!r} is not a Gaussian mixture; mode centres are defined for {mixtures}")


def _is_mixture(name: str) -> bool:
    return name in ("8gaussians", "grid25", "ring8")


def mode_centers(name: str) -> Tensor:
    """Centres (K, 2) float32 of the mixture components of 8gaussians, grid25 or ring8.

    >>> mode_centers("grid25").shape
    torch.Size([25, 2])
    """
    return gaussian_mixture(name)[0].float()


def mode_std(name: str) -> float:
    """Standard deviation of each (isotropic) component of 8gaussians, grid25 or ring8."""
    return gaussian_mixture(name)[1]


def toy_log_prob(name: str, x: Tensor) -> Tensor:
    """log p(x) in nats, x (B, 2) -> (B,), for the toys with a closed-form density.

    Mixtures: log p(x) = logsumexp_k [log N(x; mu_k, sigma^2 I)] - log K.
    Checkerboard: log(1/32) on the 8 dark squares, -inf elsewhere.
    """
    if x.ndim != 2 or x.shape[1] != 2:
        raise DataError(f"toy densities take points of shape (B, 2), got {tuple(x.shape)}")
    x64 = x.to(torch.float64)  # differentiable, so autograd gives the true score
    if name == "checkerboard":
        cell = torch.floor(x64 / 2.0)
        inside = (x64 >= -4.0).all(1) & (x64 < 4.0).all(1) & (cell.sum(1).remainder(2) == 0)
        out = torch.full_like(x64[:, 0], -math.inf)
        out[inside] = -math.log(32.0)
        return out.to(x.dtype)
    centers, std = gaussian_mixture(name)
    centers = centers.to(x64.device)
    sq_dist = (x64[:, None, :] - centers[None]).pow(2).sum(-1)  # (B, K)
    log_normal = -0.5 * sq_dist / std**2 - math.log(2 * math.pi * std**2)  # 2D: -log(2 pi sigma^2)
    return (torch.logsumexp(log_normal, dim=1) - math.log(len(centers))).to(x.dtype)


def has_density(name: str) -> bool:
    return _is_mixture(name) or name == "checkerboard"


# -- sampling -----------------------------------------------------------------------------------
def _check(name: str) -> None:
    if name not in VALUE_RANGES:
        raise DataError(f"unknown toy density {name!r}; known: {', '.join(TOY_NAMES)}")


def sample_toy(name: str, n: int, generator: torch.Generator | None = None, *, return_labels: bool = False):
    """Draw n points (n, 2) float32 from the toy density `name` (see the module docstring).

    generator: the source of randomness; None means a generator seeded with 0.
    With return_labels=True, returns (x, y) where y (n,) long is the mixture component, arm or
    ring of each point, or None for swissroll and checkerboard.

    >>> x = sample_toy("8gaussians", 5, torch.Generator().manual_seed(0))
    >>> x.shape, x.dtype
    (torch.Size([5, 2]), torch.float32)
    """
    _check(name)
    if n < 0:
        raise DataError(f"number of samples must be >= 0, got {n}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    x, y = _SAMPLERS[name](n, g)
    x = x.float()
    return (x, y) if return_labels else x


def _randn(n: int, d: int, g: torch.Generator) -> Tensor:
    return torch.randn(n, d, generator=g, dtype=torch.float64)


def _rand(n: int, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _shuffled(x: Tensor, y: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    perm = torch.randperm(len(x), generator=g)
    return x[perm], y[perm]


def _even_angles(k: int, stop: float, endpoint: bool) -> Tensor:
    if endpoint:
        return torch.linspace(0.0, stop, k, dtype=torch.float64)
    return stop * torch.arange(k, dtype=torch.float64) / max(k, 1)


def _moons(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    n_out = n // 2
    a_out = _even_angles(n_out, math.pi, endpoint=True)
    a_in = _even_angles(n - n_out, math.pi, endpoint=True)
    outer = torch.stack([a_out.cos(), a_out.sin()], 1)
    inner = torch.stack([1 - a_in.cos(), 1 - a_in.sin() - 0.5], 1)
    x, y = _shuffled(torch.cat([outer, inner]), _labels_by_count([n_out, n - n_out]), g)
    x = x + 0.1 * _randn(n, 2, g)
    return x * 2 + torch.tensor([-1.0, -0.2], dtype=torch.float64), y


def _circles(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    n_out = n // 2
    x, y = _concentric([n_out, n - n_out], [1.0, 0.5], g)
    return (x + 0.08 * _randn(n, 2, g)) * 3, y


def _rings(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    quarter = n // 4
    x, y = _concentric([quarter, quarter, quarter, n - 3 * quarter], [3.0, 2.25, 1.5, 0.75], g)
    return x + 0.08 * _randn(n, 2, g), y


def _concentric(counts: list[int], radii: list[float], g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Points at evenly spaced angles in [0, 2 pi) on circles of the given radii, shuffled."""
    parts = []
    for count, radius in zip(counts, radii):
        angle = _even_angles(count, 2 * math.pi, endpoint=False)
        parts.append(radius * torch.stack([angle.cos(), angle.sin()], 1))
    return _shuffled(torch.cat(parts), _labels_by_count(counts), g)


def _labels_by_count(counts: list[int]) -> Tensor:
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


def _swissroll(n: int, g: torch.Generator) -> tuple[Tensor, None]:
    t = 1.5 * math.pi * (1 + 2 * _rand(n, g))
    x = torch.stack([t * t.cos(), t * t.sin()], 1) + _randn(n, 2, g)
    return x / 5, None


def _mixture(name: str):
    def draw(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        centers, std = gaussian_mixture(name)
        k = torch.randint(len(centers), (n,), generator=g)
        return centers[k] + std * _randn(n, 2, g), k

    return draw


def _checkerboard(n: int, g: torch.Generator) -> tuple[Tensor, None]:
    x1 = 4 * _rand(n, g) - 2
    lower = torch.randint(2, (n,), generator=g, dtype=torch.float64)
    x2 = _rand(n, g) - 2 * lower + torch.floor(x1).remainder(2)
    return torch.stack([x1, x2], 1) * 2, None


def _pinwheel(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    num_arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    arm = torch.arange(n) % num_arms
    features = _randn(n, 2, g) * torch.tensor([radial_std, tangential_std], dtype=torch.float64)
    features[:, 0] += 1.0
    angle = 2 * math.pi * arm / num_arms + rate * features[:, 0].exp()
    cos, sin = angle.cos(), angle.sin()
    f1, f2 = features[:, 0], features[:, 1]
    x = 2 * torch.stack([f1 * cos + f2 * sin, -f1 * sin + f2 * cos], 1)  # FFJORD's f @ [[c, -s], [s, c]]
    return _shuffled(x, arm, g)


_SAMPLERS = {
    "moons": _moons,
    "circles": _circles,
    "swissroll": _swissroll,
    "8gaussians": _mixture("8gaussians"),
    "checkerboard": _checkerboard,
    "pinwheel": _pinwheel,
    "rings": _rings,
    "grid25": _mixture("grid25"),
    "ring8": _mixture("ring8"),
}


# -- the dataset ----------------------------------------------------------------------------------
def load_toy(name: str, *, seed: int = 0, n: int = 10_000) -> Dataset:
    """n points of the toy `name` drawn with a generator seeded by `seed`, split 0.8/0.1/0.1 by
    `seeded_splits`. Spec: kind "vector", shape (2,), value_range `VALUE_RANGES[name]`, levels None.
    `true_log_prob` is set for 8gaussians, grid25, ring8 and checkerboard."""
    _check(name)
    n = int(n)
    if n < 10:
        raise DataError(f"toy dataset {name!r}: n={n} is too small; use n >= 10")
    x, y = sample_toy(name, n, torch.Generator().manual_seed(seed), return_labels=True)
    num_classes = NUM_CLASSES[name]
    spec = DataSpec(
        name=name,
        kind="vector",
        shape=(2,),
        value_range=VALUE_RANGES[name],
        num_classes=num_classes,
        levels=None,
        class_names=None if num_classes is None else tuple(str(k) for k in range(num_classes)),
    )
    return Dataset(
        x,
        spec,
        y,
        splits=seeded_splits(n, seed),
        true_log_prob=functools.partial(toy_log_prob, name) if has_density(name) else None,
    )
