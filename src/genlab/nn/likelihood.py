"""Likelihood units: nats per example to bits per dimension, with the dequantization correction.

Convention (that of RealNVP and Glow, stated once here). Data with `levels`
discrete values per dimension, stored in value_range = (a, b), is modelled by a density on the
continuous box [a, b]^D. Uniform dequantization splits [a, b] into `levels` bins of equal width

    w = (b - a) / levels,

and level v in {0, ..., levels-1} owns the bin [a + v w, a + (v + 1) w); the model is trained on
x = a + (v + u) w with u ~ U[0, 1)^D. The probability of the discrete data satisfies
(Theis et al. 2016, sec. 3.1)

    -log P(v) <= E_u[-log p(x)] - D log w,

so a density NLL of `nll` nats per example becomes a discrete NLL of nll - D log w nats, and

    bits/dim = (nll - D ln w) / (D ln 2) = (nll + D ln(levels / (b - a))) / (D ln 2).

For 8-bit images scaled to [0, 1] (levels=256): bpd = (nll + D ln 256) / (D ln 2), so the uniform
density on [0, 1]^D (nll = 0) gives exactly 8 bits/dim; for scikit-learn's digits (17 levels)
the same density gives log2(17) = 4.09 bits/dim. Models of the discrete values themselves
(PixelCNN with a softmax over levels) already report a discrete NLL: use levels=None for them.
"""

from __future__ import annotations

import math

import torch  # noqa: F401  (the doctest uses it)
from torch import Tensor

from genlab.errors import ConfigError


def nats_to_bits_per_dim(nll_nats: Tensor | float, dim: int) -> Tensor | float:
    """nll_nats / (dim ln 2): a negative log-likelihood in nats per example (B,) to bits per
    dimension, with no dequantization correction."""
    if dim < 1:
        raise ConfigError(f"dim must be >= 1, got {dim}")
    return nll_nats / (dim * math.log(2.0))


def bits_per_dim(
    nll_nats: Tensor | float,
    dim: int,
    *,
    levels: int | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Tensor | float:
    """Bits per dimension of a negative log-likelihood in nats per example, nll_nats (B,).

    levels=None: the NLL is already that of the data as modelled (a continuous density on
    continuous data, or a discrete model's NLL): bpd = nll / (D ln 2).
    levels=L: the NLL is of a density on value_range = (a, b) fitted to uniformly dequantized
    L-level data (see the module docstring), and the discrete NLL is reported:

        bpd = (nll + D ln(L / (b - a))) / (D ln 2).

    >>> round(float(bits_per_dim(torch.tensor([0.0]), 784, levels=256)), 6)
    8.0
    """
    if levels is None:
        return nats_to_bits_per_dim(nll_nats, dim)
    if levels < 2:
        raise ConfigError(f"levels must be >= 2 (or None for continuous data), got {levels}")
    low, high = value_range
    if not high > low:
        raise ConfigError(f"value_range must be (low, high) with high > low, got {value_range}")
    bin_width = (high - low) / levels
    return nats_to_bits_per_dim(nll_nats - dim * math.log(bin_width), dim)

