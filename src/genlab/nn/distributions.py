"""Log-densities, KL divergences and Gaussian draws used by every family, in one place.

Conventions: the first dimension is the batch; log-densities are summed over all the others and
returned as (B,) in nats. Inputs in bf16/fp16 (from autocast) are computed in float32, because
sums over thousands of pixels lose their precision in 8 bits of mantissa.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.data.tables import split_blocks

LOG_2PI = math.log(2.0 * math.pi)


def sum_except_batch(x: Tensor) -> Tensor:
    """(B, ...) -> (B,): the sum over every dimension but the first."""
    return x.flatten(1).sum(1) if x.dim() > 1 else x


def at_least_float32(x: Tensor) -> Tensor:
    """x in float32 when it is in a lower precision (bf16, fp16); float64 stays float64."""
    return x.float() if x.is_floating_point() and x.element_size() < 4 else x


def sample_standard_normal(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """eps ~ N(0, I) of `shape` on `device`.

    With a generator, the numbers are drawn on the generator's device and then moved, so a CPU
    generator with one seed gives the same numbers whatever device the model is on.
    """
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=dtype)
    eps = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype)
    return eps if device is None else eps.to(device)


def diagonal_gaussian_log_prob(x: Tensor, mean: Tensor, logvar: Tensor | float) -> Tensor:
    """log N(x; mean, diag(exp(logvar))) = -1/2 sum_i [log 2pi + logvar_i + (x_i - mean_i)^2 / exp(logvar_i)].

    x: (B, ...); mean, logvar broadcastable to x. Returns (B,).
    """
    x, mean = at_least_float32(x), at_least_float32(mean)
    if not isinstance(logvar, Tensor):
        logvar = torch.tensor(float(logvar), dtype=x.dtype, device=x.device)
    logvar = at_least_float32(logvar)
    elementwise = -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))
    return sum_except_batch(elementwise)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) = -1/2 sum_i (log 2pi + z_i^2). z: (B, ...) -> (B,)."""
    z = at_least_float32(z)
    return sum_except_batch(-0.5 * (LOG_2PI + z**2))


def gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor | float) -> Tensor:
    """log N(x; mean, sigma^2) summed over dimensions, with log sigma = log_scale.

    log_scale: a float (a fixed scale) or a tensor broadcastable to x (a learned scale, per
    dimension or per sample). Equals diagonal_gaussian_log_prob(x, mean, 2 * log_scale). (B,).
    """
    return diagonal_gaussian_log_prob(x, mean, 2.0 * log_scale)


def bernoulli_log_likelihood(x: Tensor, logits: Tensor) -> Tensor:
    """sum_i [x_i log sigmoid(l_i) + (1 - x_i) log(1 - sigmoid(l_i))] = -BCEWithLogits(l, x), summed. (B,).

    x may be continuous in [0, 1]: the sum is then a cross-entropy between Bernoulli(x_i) and
    Bernoulli(sigmoid(l_i)), not the log of a normalised density over [0, 1]^D.
    """
    x, logits = at_least_float32(x), at_least_float32(logits)
    return -sum_except_batch(F.binary_cross_entropy_with_logits(logits, x.to(logits.dtype), reduction="none"))


def decoder_mean(params: Tensor, likelihood: str, value_range: tuple[float, float]) -> Tensor:
    """E[x | z] in the data's value range [low, high] from a decoder's output `params` (any shape):
    low + (high - low) sigmoid(params) for "bernoulli" logits (on data scaled to [0, 1]), else the
    Gaussian mean clamped to [low, high]."""
    low, high = value_range
    if likelihood == "bernoulli":
        return low + (high - low) * torch.sigmoid(params)
    return params.clamp(low, high)


class TableLikelihood:
    """p(x | params) of an encoded table row (`DataSpec.table_blocks`), as TVAE's decoder (Xu et al.
    2019): N(x_i; params_i, sigma_i^2) on each continuous coordinate, Categorical(softmax of the
    block's params) on each one-hot block (categories, mixture modes, missing-value slots).

    log p(x | params) = sum_i log N(x_i; params_i, sigma_i^2) + sum_b sum_j x_bj log softmax(params_b)_j,
    a density in the numbers times a probability in the categories. x, params: (B, D)."""

    def __init__(self, blocks: Sequence[Sequence[Any]]) -> None:
        self.continuous, groups = split_blocks(blocks)
        self.categorical = [(start, stop) for _, start, stop in groups]

    def log_prob(self, x: Tensor, params: Tensor, log_scale: Tensor | float) -> Tensor:
        """(B,) log p(x | params); log_scale: log sigma, a float or (D,) (only the continuous
        coordinates are read)."""
        x, params = at_least_float32(x), at_least_float32(params)
        total = x.new_zeros(x.shape[0])
        if self.continuous:
            index = self.continuous
            scale = log_scale if isinstance(log_scale, float) else log_scale[index]
            total = total + gaussian_log_likelihood(x[:, index], params[:, index], scale)
        for start, stop in self.categorical:
            total = total + (x[:, start:stop] * F.log_softmax(params[:, start:stop], dim=1)).sum(1)
        return total

    def mean(self, params: Tensor, value_range: tuple[float, float]) -> Tensor:
        """E[x | params]: the Gaussian means clamped to value_range, each block's probabilities. (B, D)."""
        out = params.clamp(*value_range)
        for start, stop in self.categorical:
            out[:, start:stop] = F.softmax(params[:, start:stop].float(), dim=1).to(out.dtype)
        return out

    def sample(self, params: Tensor, log_scale: Tensor | float, value_range: tuple[float, float],
               generator: torch.Generator | None = None) -> Tensor:
        """x ~ p(x | params): numbers mean + sigma eps (clamped to value_range), each block one-hot
        of a category drawn from its softmax. (B, D)."""
        scale = torch.as_tensor(log_scale, dtype=params.dtype, device=params.device).exp()
        noise = sample_standard_normal(params.shape, generator=generator, device=params.device, dtype=params.dtype)
        out = (params + scale * noise).clamp(*value_range)
        for start, stop in self.categorical:
            drawn = torch.multinomial(F.softmax(params[:, start:stop].float(), dim=1), 1, generator=generator).squeeze(1)
            out[:, start:stop] = F.one_hot(drawn, stop - start).to(out.dtype)
        return out


def gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) = 1/2 sum_i (mean_i^2 + exp(logvar_i) - 1 - logvar_i).

    Kingma & Welling 2014, appendix B. mean, logvar: (B, D) -> (B,).
    """
    mean, logvar = at_least_float32(mean), at_least_float32(logvar)
    return sum_except_batch(0.5 * (mean**2 + torch.exp(logvar) - 1.0 - logvar))


def diagonal_gaussian_mixture_log_prob(z: Tensor, means: Tensor, logvars: Tensor, log_weights: Tensor) -> Tensor:
    """log sum_k w_k N(z; m_k, diag(exp(logvar_k))), by log-sum-exp over the K components.

    z: (B, D); means, logvars: (K, D); log_weights: (K,) normalised (log w_k, summing to 1 in
    probability). Returns (B,). Evaluated for all B x K pairs at once, so memory is O(B K D).
    """
    z, means, logvars = at_least_float32(z), at_least_float32(means), at_least_float32(logvars)
    z = z[:, None, :]  # (B, D) -> (B, 1, D), against (K, D) components
    component = -0.5 * (LOG_2PI + logvars + (z - means) ** 2 * torch.exp(-logvars)).sum(-1)  # (B, K)
    return torch.logsumexp(component + at_least_float32(log_weights), dim=1)


class DiagonalGaussian(NamedTuple):
    """N(mean, diag(exp(logvar))), a batch of them; mean, logvar: (B, D).

    Unpacks as `mean, logvar = q`; methods give draws, log-densities and the KL to N(0, I).
    """

    mean: Tensor
    logvar: Tensor

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def rsample(self, generator: torch.Generator | None = None) -> Tensor:
        """z = mean + std * eps, eps ~ N(0, I): the reparameterisation (Kingma & Welling 2014),
        differentiable in mean and logvar. (B, D)."""
        eps = sample_standard_normal(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z) per row, (B,)."""
        return diagonal_gaussian_log_prob(z, self.mean, self.logvar)

    def entropy(self) -> Tensor:
        """H[q] = 1/2 sum_i (log 2pi + 1 + logvar_i) per row, (B,)."""
        return sum_except_batch(0.5 * (LOG_2PI + 1.0 + at_least_float32(self.logvar)))

    def kl_to_standard_normal(self) -> Tensor:
        """KL(self || N(0, I)) per row in closed form, (B,); see `gaussian_kl`."""
        return gaussian_kl(self.mean, self.logvar)

    def repeat(self, k: int) -> "DiagonalGaussian":
        """The batch repeated k times, (k * B, D), row j * B + b being row b."""
        return DiagonalGaussian(self.mean.repeat(k, 1), self.logvar.repeat(k, 1))
