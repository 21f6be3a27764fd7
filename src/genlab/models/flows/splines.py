"""Monotone rational-quadratic splines (Durkan et al. 2019, "Neural Spline Flows"; Gregory & Delbourgo 1982).

An elementwise, strictly increasing map y = g(x) with K bins on [-B, B] and the identity outside
(linear tails of slope 1, so the map is a bijection of the whole real line). Inside, the bin
edges (knots) are (x^k, y^k), k = 0..K, with x^0 = y^0 = -B, x^K = y^K = B, and the derivatives at
the knots are delta^k > 0 with delta^0 = delta^K = 1 (the tails' slope: g is C^1 there).
In bin k, with w_k = x^{k+1} - x^k, h_k = y^{k+1} - y^k, s_k = h_k / w_k and xi = (x - x^k) / w_k in [0, 1]
(Durkan et al., eqs. 4 and 5):

    g(x)  = y^k + h_k [s_k xi^2 + delta^k xi (1 - xi)] / [s_k + (delta^{k+1} + delta^k - 2 s_k) xi (1 - xi)]
    g'(x) = s_k^2 [delta^{k+1} xi^2 + 2 s_k xi (1 - xi) + delta^k (1 - xi)^2]
            / [s_k + (delta^{k+1} + delta^k - 2 s_k) xi (1 - xi)]^2

The inverse solves a xi^2 + b xi + c = 0 in the bin that holds y (eqs. 6-8 of the paper's appendix):

    a = h_k (s_k - delta^k) + (y - y^k) d,   b = h_k delta^k - (y - y^k) d,   c = -s_k (y - y^k),
    d = delta^{k+1} + delta^k - 2 s_k,       xi = 2c / (-b - sqrt(b^2 - 4ac))

(the root in [0, 1], (-b + sqrt(b^2 - 4ac)) / 2a, rewritten so that it does not divide by a,
which vanishes where the bin is nearly linear).

Parameters are unnormalised tensors, one set per element, so that a network can output them:
widths (..., K) and heights (..., K) go through a softmax (each bin at least `min_bin_width`,
`min_bin_height` of the interval), the K - 1 interior derivatives (..., K - 1) through a shifted
softplus (at least `min_derivative`). All-zero parameters give uniform bins and unit derivatives,
hence the identity: a conditioner whose last layer starts at zero starts the spline at the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.errors import ConfigError

DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


def spline_parameter_count(bins: int) -> int:
    """Unnormalised parameters per element of a K-bin spline: K widths, K heights, K - 1 interior derivatives."""
    return 3 * bins - 1


def split_spline_parameters(params: Tensor, bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Split (..., 3K - 1) into widths (..., K), heights (..., K), derivatives (..., K - 1)."""
    if params.shape[-1] != spline_parameter_count(bins):
        raise ValueError(f"a {bins}-bin spline takes 3K - 1 = {spline_parameter_count(bins)} parameters per element, "
                         f"got {params.shape[-1]}")
    return params[..., :bins], params[..., bins : 2 * bins], params[..., 2 * bins :]


def _knots(unnormalized: Tensor, bound: float, min_size: float) -> tuple[Tensor, Tensor]:
    """Bin sizes (..., K) summing to 2B, each >= 2B min_size, and their K + 1 knots from -B to B."""
    bins = unnormalized.shape[-1]
    if min_size * bins >= 1.0:
        raise ConfigError(f"minimum bin size {min_size} times {bins} bins must be below 1; lower it or use fewer bins")
    fractions = min_size + (1.0 - min_size * bins) * torch.softmax(unnormalized, dim=-1)
    knots = F.pad(torch.cumsum(fractions, dim=-1), (1, 0))  # (..., K + 1) from 0 to ~1
    knots = 2.0 * bound * knots - bound
    # the cumulative sum ends at 1 only up to rounding; pin both ends so the tails join exactly
    knots = torch.cat([torch.full_like(knots[..., :1], -bound), knots[..., 1:-1], torch.full_like(knots[..., :1], bound)], -1)
    return knots[..., 1:] - knots[..., :-1], knots


def _derivatives(unnormalized: Tensor, min_derivative: float) -> Tensor:
    """Knot derivatives (..., K + 1): 1 at both ends (the identity tails), min_d + softplus(u + c)
    inside, with c chosen so that u = 0 gives exactly 1."""
    shift = math.log(math.expm1(1.0 - min_derivative))  # softplus^{-1}(1 - min_d)
    interior = min_derivative + F.softplus(unnormalized + shift)
    one = torch.ones_like(interior[..., :1])
    return torch.cat([one, interior, one], dim=-1)


def _clamp_to_unit(xi: Tensor) -> Tensor:
    """xi clamped to [0, 1] with the gradient of xi itself: rounding can put a bin's edge a hair
    outside, and a plain clamp would zero the derivative there (log g' = -inf at the knots)."""
    return xi + (xi.clamp(0.0, 1.0) - xi).detach()


def _gather(values: Tensor, index: Tensor) -> Tensor:
    return torch.gather(values, -1, index[..., None])[..., 0]


def rational_quadratic_spline(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    *,
    inverse: bool = False,
    bound: float = 3.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    """Apply g (or g^{-1} with inverse=True) elementwise; return (outputs, log|d outputs / d inputs|).

    inputs: any shape S; unnormalized_widths, unnormalized_heights: S + (K,);
    unnormalized_derivatives: S + (K - 1,) (the interior knots; the ends are 1). Outputs and
    elementwise log-derivatives have shape S (sum them over features for a log-determinant).
    Outside [-bound, bound] the map is the identity (log-derivative 0).
    """
    bins = unnormalized_widths.shape[-1]
    if unnormalized_heights.shape[-1] != bins or unnormalized_derivatives.shape[-1] != bins - 1:
        raise ValueError(
            f"a {bins}-bin spline needs {bins} heights and {bins - 1} interior derivatives, got "
            f"{unnormalized_heights.shape[-1]} and {unnormalized_derivatives.shape[-1]}"
        )
    if bound <= 0:
        raise ConfigError(f"spline bound={bound!r} must be > 0")
    inside = (inputs >= -bound) & (inputs <= bound)
    # evaluate the spline everywhere on clamped inputs (no NaNs to leak through torch.where's gradient)
    x = inputs.clamp(-bound, bound)

    widths, x_knots = _knots(unnormalized_widths, bound, min_bin_width)
    heights, y_knots = _knots(unnormalized_heights, bound, min_bin_height)
    derivatives = _derivatives(unnormalized_derivatives, min_derivative)

    # the bin k with knot_k <= value < knot_{k+1}: count the interior knots at or below the value
    search_knots = y_knots if inverse else x_knots
    k = torch.searchsorted(search_knots[..., 1:-1].contiguous(), x[..., None].contiguous(), right=True)[..., 0]
    x_k, w_k = _gather(x_knots[..., :-1], k), _gather(widths, k)
    y_k, h_k = _gather(y_knots[..., :-1], k), _gather(heights, k)
    d_k, d_k1 = _gather(derivatives[..., :-1], k), _gather(derivatives[..., 1:], k)
    s_k = h_k / w_k
    curvature = d_k1 + d_k - 2.0 * s_k

    if inverse:
        dy = x - y_k
        a = h_k * (s_k - d_k) + dy * curvature
        b = h_k * d_k - dy * curvature
        c = -s_k * dy
        discriminant = (b.pow(2) - 4.0 * a * c).clamp_min(0.0)
        xi = _clamp_to_unit(2.0 * c / (-b - discriminant.sqrt()))
        outputs = x_k + xi * w_k
    else:
        xi = _clamp_to_unit((x - x_k) / w_k)
        xi_1m = xi * (1.0 - xi)
        outputs = y_k + h_k * (s_k * xi.pow(2) + d_k * xi_1m) / (s_k + curvature * xi_1m)

    xi_1m = xi * (1.0 - xi)
    denominator = s_k + curvature * xi_1m
    numerator = s_k.pow(2) * (d_k1 * xi.pow(2) + 2.0 * s_k * xi_1m + d_k * (1.0 - xi).pow(2))
    log_derivative = torch.log(numerator) - 2.0 * torch.log(denominator)  # log g'(x) at the bin's x
    if inverse:
        log_derivative = -log_derivative

    outputs = torch.where(inside, outputs, inputs)
    log_derivative = torch.where(inside, log_derivative, torch.zeros_like(log_derivative))
    return outputs, log_derivative
