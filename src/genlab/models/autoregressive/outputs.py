"""The per-dimension conditionals p(x_i | x_<i) an autoregressive network parametrises.

Each output maps P = `params_per_dim` network outputs for one data dimension to a distribution:

- `CategoricalOutput`: a softmax over the data's L levels (van den Oord et al. 2016, 256-way for 8-bit);
- `BernoulliOutput`: one logit, for binary data (L = 2);
- `DiscretizedLogisticMixture`: K logistics on [-1, 1] integrated over each level's bin, the edge
  bins reaching to -inf and +inf (Salimans et al. 2017, "PixelCNN++", sec. 2.1);
- `GaussianMixtureOutput`: K Gaussians, a density for continuous data.

Discrete outputs take integer levels v in {0..L-1} (long) and return log P(v) in nats; the continuous
one takes real values and returns a log-density. Shapes: params (..., P), values (...) -> (...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.errors import ConfigError
from genlab.nn.distributions import at_least_float32

LOG_2PI = math.log(2.0 * math.pi)
# PixelCNN++ keeps log s above -7: a narrower logistic puts all its mass in one bin, and its
# gradients vanish; exp(-7) is far below a bin of 8-bit data (2 / 255)
_MIN_LOG_SCALE = -7.0


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """u ~ U[0, 1) of `shape`, drawn on the generator's device and moved to `like`'s device and dtype,
    so one CPU-seeded generator gives the same numbers wherever the model runs."""
    if generator is None:
        return torch.rand(shape, device=like.device, dtype=like.dtype)
    return torch.rand(shape, generator=generator, device=generator.device, dtype=like.dtype).to(like.device)


def sample_categorical(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """v ~ Categorical(softmax(logits)) by inverting the CDF: v = #{k : F(k) <= u}, u ~ U[0, 1).
    logits (..., L) -> (...) long."""
    cdf = torch.softmax(logits.double(), dim=-1).cumsum(-1)  # double: the last value is 1 to ~1e-16
    u = uniform(logits.shape[:-1], generator, cdf)
    return (cdf <= u[..., None]).sum(-1).clamp_(max=logits.shape[-1] - 1)


class OutputDistribution:
    """A family of per-dimension conditionals with `params_per_dim` parameters each."""

    params_per_dim: int
    discrete: bool = True

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        """log p(value | params) per dimension: params (..., P), value (...) -> (...)."""
        raise NotImplementedError

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One draw per dimension: params (..., P) -> (...) (long levels, or floats if continuous)."""
        raise NotImplementedError

    def probabilities(self, params: Tensor) -> Tensor:
        """Discrete outputs: P(v) for every level, params (..., P) -> (..., L)."""
        raise NotImplementedError


class CategoricalOutput(OutputDistribution):
    """P(v) = softmax(l)_v over L levels; P = L."""

    def __init__(self, levels: int) -> None:
        self.levels = self.params_per_dim = levels

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        return torch.log_softmax(at_least_float32(params), dim=-1).gather(-1, value.long()[..., None])[..., 0]

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return sample_categorical(params, generator)

    def probabilities(self, params: Tensor) -> Tensor:
        return torch.softmax(at_least_float32(params), dim=-1)


class BernoulliOutput(OutputDistribution):
    """P(v = 1) = sigmoid(l), P(v = 0) = sigmoid(-l); one logit, for binary data."""

    levels = 2
    params_per_dim = 1

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        logit = at_least_float32(params[..., 0])
        return F.logsigmoid(torch.where(value.bool(), logit, -logit))

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        logit = params[..., 0]
        return (uniform(logit.shape, generator, logit) < torch.sigmoid(logit)).long()

    def probabilities(self, params: Tensor) -> Tensor:
        p1 = torch.sigmoid(at_least_float32(params[..., 0]))
        return torch.stack([1.0 - p1, p1], dim=-1)


class DiscretizedLogisticMixture(OutputDistribution):
    """A mixture of K logistics discretized to L levels (Salimans et al. 2017, eq. 2).

    Level v sits at c_v = 2 v / (L - 1) - 1 in [-1, 1] and owns the bin [c_v - d, c_v + d], d = 1 / (L - 1),
    with the edge bins stretched to (-inf, c_0 + d] and [c_{L-1} - d, +inf) so the levels' masses sum to 1:

        P(v) = sum_k pi_k [F((c_v + d - mu_k) / s_k) - F((c_v - d - mu_k) / s_k)],   F = sigmoid,
        F(+inf) = 1 at the top level, F(-inf) = 0 at level 0.

    params (..., 3K) = (mixture logits, means mu, log scales log s). Computed in log space:
    log F(z) = logsigmoid(z), log(1 - F(z)) = logsigmoid(-z), and for a bin
    log(F(a) - F(b)) = log F(a) + log(-expm1(log F(b) - log F(a))), exact even far in the tails.
    """

    def __init__(self, levels: int, components: int) -> None:
        if levels < 2 or components < 1:
            raise ConfigError(f"a discretized logistic mixture needs levels >= 2 and components >= 1; got {levels}, {components}")
        self.levels, self.components = levels, components
        self.params_per_dim = 3 * components

    def split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., 3K) -> mixture logits, means, log scales, each (..., K)."""
        logits, means, log_scales = at_least_float32(params).chunk(3, dim=-1)
        return logits, means, log_scales.clamp(min=_MIN_LOG_SCALE)

    def centre(self, value: Tensor) -> Tensor:
        """c_v = 2 v / (L - 1) - 1, the position of level v in [-1, 1]."""
        return 2.0 * value / (self.levels - 1) - 1.0

    def component_log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        """log P(v | component k), (..., K), for levels value (...)."""
        _, means, log_scales = self.split(params)
        half_bin = 1.0 / (self.levels - 1)
        c = self.centre(value.to(means.dtype))[..., None]
        inv_s = torch.exp(-log_scales)
        upper = (c + half_bin - means) * inv_s
        lower = (c - half_bin - means) * inv_s
        log_cdf_upper = F.logsigmoid(upper)  # log F(upper)
        log_cdf_lower = F.logsigmoid(lower)
        log_survival_lower = F.logsigmoid(-lower)  # log (1 - F(lower))
        # min(): keeps expm1's argument < 0 where upper and lower coincide to rounding (mass ~ 0)
        log_bin = log_cdf_upper + torch.log(-torch.expm1((log_cdf_lower - log_cdf_upper).clamp(max=-1e-12)))
        v = value.long()[..., None].expand_as(log_bin)
        return torch.where(v == 0, log_cdf_upper, torch.where(v == self.levels - 1, log_survival_lower, log_bin))

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        logits = self.split(params)[0]
        return torch.logsumexp(torch.log_softmax(logits, dim=-1) + self.component_log_prob(params, value), dim=-1)

    def probabilities(self, params: Tensor) -> Tensor:
        levels = torch.arange(self.levels, device=params.device)
        expanded = params[..., None, :].expand(*params.shape[:-1], self.levels, params.shape[-1])
        return self.log_prob(expanded, levels.expand(expanded.shape[:-1])).exp()

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """k ~ pi, x = mu_k + s_k (log u - log(1 - u)) (a logistic draw), then the level whose bin holds x:
        an exact draw from P(v), since the bins partition the real line."""
        logits, means, log_scales = self.split(params)
        k = sample_categorical(logits, generator)[..., None]
        mu, log_s = means.gather(-1, k)[..., 0], log_scales.gather(-1, k)[..., 0]
        u = uniform(mu.shape, generator, mu.double()).clamp(1e-12, 1 - 1e-12)
        x = mu.double() + torch.exp(log_s.double()) * (torch.log(u) - torch.log1p(-u))
        return torch.round((x + 1.0) * (self.levels - 1) / 2.0).clamp(0, self.levels - 1).long()


class GaussianMixtureOutput(OutputDistribution):
    """p(x) = sum_k pi_k N(x; mu_k, sigma_k^2), a density on the real line; params (..., 3K) =
    (mixture logits, means, log sigma)."""

    discrete = False

    def __init__(self, components: int) -> None:
        if components < 1:
            raise ConfigError(f"a Gaussian mixture needs components >= 1; got {components}")
        self.components = components
        self.params_per_dim = 3 * components

    def split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits, means, log_scales = at_least_float32(params).chunk(3, dim=-1)
        return logits, means, log_scales.clamp(min=_MIN_LOG_SCALE)

    def log_prob(self, params: Tensor, value: Tensor) -> Tensor:
        logits, means, log_scales = self.split(params)
        z = (value.to(means.dtype)[..., None] - means) * torch.exp(-log_scales)
        component = -0.5 * (LOG_2PI + z**2) - log_scales
        return torch.logsumexp(torch.log_softmax(logits, dim=-1) + component, dim=-1)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        logits, means, log_scales = self.split(params)
        k = sample_categorical(logits, generator)[..., None]
        mu, log_s = means.gather(-1, k)[..., 0], log_scales.gather(-1, k)[..., 0]
        if generator is None:
            eps = torch.randn_like(mu)
        else:
            eps = torch.randn(mu.shape, generator=generator, device=generator.device, dtype=mu.dtype).to(mu.device)
        return mu + torch.exp(log_s) * eps


OUTPUTS = ("auto", "categorical", "logistic_mixture", "gaussian_mixture")


def make_output(kind: str, *, levels: int | None, components: int) -> OutputDistribution:
    """The output for data with `levels` (None: continuous). "auto": Bernoulli for binary data,
    a categorical over the levels for other discrete data, a Gaussian mixture for continuous data."""
    if kind == "auto":
        kind = "gaussian_mixture" if levels is None else "categorical"
    if kind == "gaussian_mixture":
        if levels is not None:
            raise ConfigError(
                f"output='gaussian_mixture' is a density for continuous data, but the data has {levels} discrete levels; "
                "use output='categorical' or 'logistic_mixture'"
            )
        return GaussianMixtureOutput(components)
    if levels is None:
        raise ConfigError(f"output={kind!r} models discrete levels, but the data is continuous (levels=None); use output='gaussian_mixture'")
    if kind == "categorical":
        return BernoulliOutput() if levels == 2 else CategoricalOutput(levels)
    if kind == "logistic_mixture":
        return DiscretizedLogisticMixture(levels, components)
    raise ConfigError(f"output={kind!r} is unknown; choose one of {', '.join(map(repr, OUTPUTS))}")
