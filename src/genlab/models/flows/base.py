"""The contract every normalizing flow keeps: bijections with log-determinants, and the flow model.

Notation (Dinh et al. 2017; Papamakarios et al. 2021, "Normalizing flows for probabilistic modeling
and inference"): a flow f maps data x to a latent z = f(x) with a simple base density p_Z, and

    log p_X(x) = log p_Z(f(x)) + log |det df/dx|.

A `Bijection` computes f in the normalizing direction (data -> latent) with its per-sample
log|det|, and f^{-1} with log|det df^{-1}/dy| = -log|det df/dx| at x = f^{-1}(y). `Compose` chains
them (log-dets add), `Inverse` swaps the directions (an IAF is the Inverse of a MAF transform).

`FlowModel` turns a bijection into a `GenerativeModel`. On data with discrete levels (pixels) it
models dequantized values: the stored level v is spread over its bin of width w (uniformly, or
by a learned q(u|x), the variational dequantization of Ho et al. 2019), then mapped into the
flow's space by a preprocessing bijection (the logit of Dinh et al. 2017 for images), whose
log-det is part of log p(x).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.config import Config
from genlab.data.dataset import Batch, DataSpec
from genlab.data.transforms import dequantize as uniform_dequantize
from genlab.data.transforms import levels_of, quantize
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, Loss
from genlab.nn.distributions import sample_standard_normal, standard_normal_log_prob, sum_except_batch


class Bijection(nn.Module):
    """An invertible map y = f(x) between (B, *shape) tensors, in the normalizing direction (data -> latent).

    forward(x, context=None) -> (y, log_det): log_det = log|det df/dx| per sample, shape (B,).
    inverse(y, context=None) -> (x, log_det): log_det = log|det df^{-1}/dy| (= minus forward's
        log_det at x), (B,).
    context: optional (B, C) conditioning tensor (class one-hot or embedding) that conditioners may
        use; bijections without a conditioner ignore it.
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class Identity(Bijection):
    """f(x) = x, log|det| = 0."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y, y.new_zeros(y.shape[0])


class Compose(Bijection):
    """f = f_K o ... o f_1 for Compose(f_1, ..., f_K): forward applies them in order and sums the
    log-dets (chain rule: log|det df/dx| = sum_k log|det df_k/dh_{k-1}|); inverse runs them in reverse."""

    def __init__(self, *bijections: Bijection) -> None:
        super().__init__()
        for b in bijections:
            if not isinstance(b, Bijection):
                raise TypeError(f"Compose takes Bijection modules, got {type(b).__name__}")
        self.bijections = nn.ModuleList(bijections)

    def __iter__(self) -> Iterator[Bijection]:
        return iter(self.bijections)

    def __len__(self) -> int:
        return len(self.bijections)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_det = x.new_zeros(x.shape[0])
        for b in self.bijections:
            x, ld = b(x, context)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_det = y.new_zeros(y.shape[0])
        for b in reversed(self.bijections):
            y, ld = b.inverse(y, context)
            log_det = log_det + ld
        return y, log_det


class Inverse(Bijection):
    """The inverse f^{-1} of a bijection f as a bijection: forward is f.inverse, inverse is f.forward.
    Inverse(masked autoregressive transform) is the inverse autoregressive flow (Kingma et al. 2016)."""

    def __init__(self, bijection: Bijection) -> None:
        super().__init__()
        self.bijection = bijection

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.bijection.inverse(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.bijection(y, context)


# -- preprocessing: from the data's value range to the flow's input space ---------------------------


class LogitTransform(Bijection):
    """The logit preprocessing of RealNVP (Dinh et al. 2017, sec. 4.1) for data in [a, b]:

        s = (x - a) / (b - a),   p = alpha + (1 - 2 alpha) s,   y = logit(p) = log p - log(1 - p),
        log|det dy/dx| = sum_i [log(1 - 2 alpha) - log(b - a) - log p_i - log(1 - p_i)].

    alpha keeps p inside (alpha, 1 - alpha), so the edges of the box map to finite values.
    Any (B, ...) shape.
    """

    def __init__(self, low: float, high: float, alpha: float = 0.05) -> None:
        super().__init__()
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ConfigError(f"the logit preprocessing needs a finite value range (low < high), got ({low}, {high}); use preprocessing='none'")
        if not 0.0 <= alpha < 0.5:
            raise ConfigError(f"logit alpha={alpha!r} must lie in [0, 0.5)")
        self.low, self.high, self.alpha = float(low), float(high), float(alpha)

    def _constant(self) -> float:
        return math.log(1.0 - 2.0 * self.alpha) - math.log(self.high - self.low)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1.0 - 2.0 * self.alpha) * (x - self.low) / (self.high - self.low)
        y = torch.log(p) - torch.log1p(-p)
        log_det = sum_except_batch(self._constant() - torch.log(p) - torch.log1p(-p))
        return y, log_det

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        p = torch.sigmoid(y)
        x = self.low + (p - self.alpha) / (1.0 - 2.0 * self.alpha) * (self.high - self.low)
        # log p + log(1 - p) = logsigmoid(y) + logsigmoid(-y), stable for large |y|
        log_det = sum_except_batch(F.logsigmoid(y) + F.logsigmoid(-y) - self._constant())
        return x, log_det


class CenterTransform(Bijection):
    """The plain shift of Glow's code: y = (x - a) / (b - a) - 1/2 maps [a, b] to [-1/2, 1/2];
    log|det dy/dx| = -D log(b - a). Any (B, ...) shape."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ConfigError(f"preprocessing='center' needs a finite value range (low < high), got ({low}, {high}); use preprocessing='none'")
        self.low, self.high = float(low), float(high)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        d = x[0].numel()
        return (x - self.low) / (self.high - self.low) - 0.5, x.new_full((x.shape[0],), -d * math.log(self.high - self.low))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        d = y[0].numel()
        return self.low + (y + 0.5) * (self.high - self.low), y.new_full((y.shape[0],), d * math.log(self.high - self.low))


PREPROCESSINGS = ("auto", "logit", "center", "none")
DEQUANTIZATIONS = ("uniform", "variational")


@dataclasses.dataclass
class FlowConfig(Config):
    """Fields every flow shares (a flow's config may subclass this; `FlowModel` reads these names
    with the defaults below from any config).

    preprocessing: the map from the data's value range to the flow's input space: "logit"
        (`LogitTransform`), "center" (to [-1/2, 1/2]), "none", or "auto": logit for images with a
        finite value range, none otherwise.
    logit_alpha: alpha of the logit preprocessing (RealNVP used 0.05).
    dequantization: for data with discrete levels, "uniform" (u ~ U[0, 1)^D in bin units; log_prob
        is then the exact density of the dequantized data) or "variational" (u ~ q(u|x), a small
        conditional flow, Ho et al. 2019; the model then reports a bound, `nll_bound`).
    class_conditional: condition every conditioner on the one-hot class label (data with classes).
    temperature: `sample` draws z ~ N(0, T^2 I) (Kingma & Dhariwal 2018, sec. 5: T < 1 trades
        diversity for cleaner samples); log_prob and the bounds are always those of the T = 1 model.
    """

    preprocessing: str = "auto"
    logit_alpha: float = 0.05
    dequantization: str = "uniform"
    class_conditional: bool = False
    temperature: float = 1.0

    def validate(self) -> None:
        self._positive("temperature")
        self._choice("preprocessing", PREPROCESSINGS)
        self._choice("dequantization", DEQUANTIZATIONS)
        self._in_range("logit_alpha", 0.0, 0.499)


# log_prob on discrete data draws its dequantization noise from a generator seeded with this when
# none is given, so that the same x gives the same number (before and after save/load)
_LOG_PROB_SEED = 0


class FlowModel(GenerativeModel):
    """Base of every flow model: log p(x) = log N(f(x); 0, I) + log|det df/dx| (+ the data's
    preprocessing log-det).

    Subclasses build `self.transform: Bijection` (on the preprocessed data's shape, spec.shape;
    its output has `self.latent_shape`, spec.shape unless they set another) in __init__, after
    calling `super().__init__(config, spec)`.

    exact_likelihood = True (an instance attribute: False with variational dequantization, whose
    model reports a bound through `nll_bound`). loss(batch) = mean NLL (terms "nll" in nats,
    "bits_per_dim").
    log_prob(x) (B,) in nats: on data with levels (spec.levels), the density of the dequantized
        data at x + u with one draw of uniform u (likelihood_kind "dequantized"; bits/dim get the
        dequantization correction); else the continuous density at x.
    sample(n, cond, generator) -> (n, *spec.shape) in the data space (quantized to the data's levels).

    Hooks: preprocess(x) -> (u, log_det) maps data to the flow's input space (logit for images,
        identity for vectors; `self.preprocessing`); postprocess(u) -> x its inverse;
        dequantize(x, generator) -> x' uniform dequantization (`genlab.data.transforms.dequantize`);
        dequantize_with_log_q(x, generator) -> (x', log q(u|x)) with log q in bin units (0 for uniform);
        base_log_prob(z) and base_sample(shape, generator) (standard normal);
        context(y) -> the (B, num_classes) one-hot label for conditional flows, or None.
    """

    initializes_once = True

    exact_likelihood = True

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.latent_shape: tuple[int, ...] = tuple(spec.shape)
        self.preprocessing: Bijection = self.build_preprocessing()
        self.class_conditional = bool(getattr(config, "class_conditional", False))
        if self.class_conditional and not spec.num_classes:
            raise ConfigError(f"class_conditional=True needs data with class labels; {spec.name!r} has none (set class_conditional=false)")
        self.context_dim = spec.num_classes if self.class_conditional else None
        self.num_classes = self.context_dim
        self.dequantizer: nn.Module | None = None
        # rows and columns of noise appended to the flow's input (`set_noise_padding`): none unless a
        # subclass needs sides its squeezes can halve
        self.noise_padding: tuple[int, int] = (0, 0)
        if getattr(config, "dequantization", "uniform") == "variational" and spec.levels is not None:
            from genlab.models.flows.layers import VariationalDequantizer  # layers builds on this module

            self.dequantizer = VariationalDequantizer(spec.shape, context_dim=self.context_dim)
            self.exact_likelihood = False  # E_q[log p - log q] bounds log P(x); see nll_bound
        # set once by `initialize_from_data` (ActNorm statistics), saved with the weights so a
        # resumed or reloaded run does not initialise again

    # -- hooks --------------------------------------------------------------------------------
    def build_preprocessing(self) -> Bijection:
        """The preprocessing bijection chosen by config.preprocessing (see `FlowConfig`)."""
        choice = getattr(self.config, "preprocessing", "auto")
        low, high = self.spec.value_range
        bounded = math.isfinite(low) and math.isfinite(high) and high > low
        if choice == "auto":
            choice = "logit" if self.spec.kind == "image" and bounded else "none"
        if choice == "logit":
            return LogitTransform(low, high, getattr(self.config, "logit_alpha", 0.05))
        if choice == "center":
            return CenterTransform(low, high)
        return Identity()

    def preprocess(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data (B, *spec.shape) in value_range -> the flow's input (B, *spec.shape) and log|det| (B,)."""
        return self.preprocessing(x)

    def postprocess(self, u: Tensor) -> Tensor:
        """The flow's input space -> data space (the inverse of `preprocess`), clamped to value_range."""
        x, _ = self.preprocessing.inverse(u)
        low, high = self.spec.value_range
        return x.clamp(low, high) if math.isfinite(low) and math.isfinite(high) else x

    def dequantize(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Uniform dequantization x' = a + (v + u) w, u ~ U[0, 1)^D (no-op for continuous data)."""
        return uniform_dequantize(x, self.spec, generator)

    def dequantize_with_log_q(self, x: Tensor, generator: torch.Generator | None = None, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x' = a + (v + u) w with u ~ q(u|x) on [0, 1)^D, and log q(u|x) per sample (B,).

        Uniform: q = U[0, 1)^D, log q = 0. Variational (Ho et al. 2019): u = sigmoid(g(eps; x)),
        eps ~ N(0, I), g a conditional flow (`layers.VariationalDequantizer`). Then

            log P(v) >= E_q[log p(x') + D log w - log q(u|x)],

        so -log p(x') + log q(u|x) is a density-scale NLL that `bits_per_dim(levels=L)` corrects.
        Continuous data: x' = x, log q = 0.
        """
        if self.spec.levels is None:
            return x, x.new_zeros(x.shape[0])
        if self.dequantizer is None:
            return self.dequantize(x, generator), x.new_zeros(x.shape[0])
        low, high = self.spec.value_range
        levels = levels_of(x, self.spec).to(x.dtype)
        u, log_q = self.dequantizer(levels / (self.spec.levels - 1), context, generator=generator)
        return low + (levels + u) * ((high - low) / self.spec.levels), log_q

    def set_noise_padding(self, rows: int, columns: int) -> tuple[int, ...]:
        """Make the flow model images `rows` and `columns` larger than the data: the flow's input
        is g(x') with `rows` rows at the bottom and `columns` columns on the right of noise
        e ~ q(e) = N(0, I) (augmentation, Huang et al. 2020, "Augmented normalizing flows"; Chen
        et al. 2020, "VFlow"), so that a flow whose squeezes need even sides models any side. The
        marginal of the flow's density over e is a density on x', and by Jensen

            log p(x') >= E_e[log p_flow(g(x') (+) e) + log|det dg/dx'| - log q(e)],

        so the likelihood becomes a bound (`exact_likelihood` False, reported by `nll_bound`); a
        sample is the flow's sample with the padding cropped off. Returns the padded (C, H, W)."""
        self.noise_padding = (int(rows), int(columns))
        if rows or columns:
            self.exact_likelihood = False
        channels, height, width = self.spec.shape
        return (channels, height + rows, width + columns)

    def pad_with_noise(self, u: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """u (B, C, H, W) -> (B, C, H + rows, W + columns) with N(0, I) noise appended, and log q of
        the noise (B,); u itself and zeros where the model has no padding."""
        rows, columns = self.noise_padding
        if not (rows or columns):
            return u, u.new_zeros(u.shape[0])
        batch, channels, height, width = u.shape
        right = sample_standard_normal((batch, channels, height, columns), generator=generator, device=u.device, dtype=u.dtype)
        bottom = sample_standard_normal((batch, channels, rows, width + columns), generator=generator, device=u.device, dtype=u.dtype)
        padded = torch.cat([torch.cat([u, right], dim=3), bottom], dim=2)
        log_q = standard_normal_log_prob(right.reshape(batch, -1)) + standard_normal_log_prob(bottom.reshape(batch, -1))
        return padded, log_q

    def crop_padding(self, u: Tensor) -> Tensor:
        """The inverse of `pad_with_noise` on the data's part: (B, C, H', W') -> (B, *spec.shape)."""
        rows, columns = self.noise_padding
        if not (rows or columns):
            return u
        return u[..., : u.shape[-2] - rows, : u.shape[-1] - columns]

    def base_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) summed per sample: (B, *latent_shape) -> (B,)."""
        return standard_normal_log_prob(z.reshape(z.shape[0], -1))

    def base_sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, I) of `shape` on the model's device and dtype."""
        return sample_standard_normal(shape, generator=generator, device=self.device, dtype=self._dtype)

    def context(self, y: Tensor | None) -> Tensor | None:
        """The conditioners' context: one-hot labels (B, num_classes) for a class-conditional flow,
        else None. y: (B,) long labels."""
        if not self.class_conditional:
            return None
        if y is None:
            raise ConfigError("this flow is class-conditional: pass the labels (batch.y, or cond= to sample/log_prob)")
        return F.one_hot(y.long(), self.spec.num_classes).to(self._dtype)

    # -- densities ------------------------------------------------------------------------------
    def continuous_log_prob(self, x: Tensor, context: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """log p(x) of the model's density on continuous (or dequantized) x (B, *spec.shape), (B,):
        log N(f(g(x)); 0, I) + log|det df/du| + log|det dg/dx|, g the preprocessing. With noise
        padding (`set_noise_padding`): one draw of the bound, with e from `generator`, minus log q(e)."""
        u, log_det_pre = self.preprocess(x)
        u, log_q_padding = self.pad_with_noise(u, generator)
        z, log_det = self.transform(u, context)
        return self.base_log_prob(z) + log_det + log_det_pre - log_q_padding

    def log_prob(self, x: Tensor, cond: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """log p(x) per sample in nats, (B,), x (B, *spec.shape) in the data's space.

        Continuous data: the exact density. Data with levels: the density of the uniformly
        dequantized data at one draw x' = dequantize(x) (from `generator`, else a fixed seed, so
        the same x gives the same value); its mean over data estimates E_u[log p(x')], which
        bounds log P(v) + D log w (see `genlab.nn.likelihood`).
        With variational dequantization there is no exact density of the discrete data: use
        `nll_bound`. cond: (B,) labels for a class-conditional flow; without them, a conditional
        flow gives the marginal log (1/K) sum_k p(x | k) under uniform class probabilities
        (K passes, one dequantization draw).
        """
        if not self.exact_likelihood:
            why = "pads the images with noise" if any(self.noise_padding) else "uses variational dequantization"
            raise NotImplementedError(f"{type(self).__name__} {why}, which gives a bound on -log P(x): use nll_bound(x)")
        if self.spec.levels is not None:
            if generator is None:
                generator = torch.Generator(device=x.device).manual_seed(_LOG_PROB_SEED)
            x = self.dequantize(x, generator)
        if self.class_conditional and cond is None:
            return self._mean_over_classes(x.shape[0], lambda context: self.continuous_log_prob(x, context))
        return self.continuous_log_prob(x, self.context(cond))

    def _mean_over_classes(self, batch_size: int, log_value) -> Tensor:
        """log (1/K) sum_k exp(log_value(context_k)), context_k (B, K) the one-hot of class k."""
        k = self.spec.num_classes
        values = []
        for label in range(k):
            values.append(log_value(self.context(torch.full((batch_size,), label, device=self.device))))
        return torch.logsumexp(torch.stack(values), dim=0) - math.log(k)  # (K, B) -> (B,)

    def nll_bound(self, x: Tensor, generator: torch.Generator | None = None, cond: Tensor | None = None) -> Tensor:
        """A one-draw estimate of the bound -log p(x') + log q(u|x), x' ~ q (per sample, nats, (B,)),
        whose expectation is >= -log P(v) - D log w (Ho et al. 2019, eq. 12). Uniform
        dequantization: -log_prob(x). A class-conditional flow without labels gives
        -log (1/K) sum_k exp(-bound_k), a bound on -log of the marginal (1/K) sum_k P(v | k)."""
        if self.class_conditional and cond is None:
            return -self._mean_over_classes(x.shape[0], lambda context: -self._nll_bound(x, generator, context))
        return self._nll_bound(x, generator, self.context(cond))

    def _nll_bound(self, x: Tensor, generator: torch.Generator | None, context: Tensor | None) -> Tensor:
        x_dequantized, log_q = self.dequantize_with_log_q(x, generator, context)
        return -(self.continuous_log_prob(x_dequantized, context, generator) - log_q)

    # -- training --------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> Loss:
        """total = mean_b [-log p(x'_b) + log q(u_b|x_b)] (nats per example; log q = 0 unless the
        dequantization is variational); terms: nll (nats) and bits_per_dim (with the
        dequantization correction on discrete data)."""
        from genlab.nn.likelihood import bits_per_dim

        context = self.context(batch.y)
        x, log_q = self.dequantize_with_log_q(batch.x, None, context)
        nll = log_q - self.continuous_log_prob(x, context)  # (B,)
        mean_nll = nll.mean()
        levels = self.spec.levels if self.likelihood_kind() == "dequantized" else None
        bpd = bits_per_dim(mean_nll.detach(), self.spec.dim, levels=levels, value_range=self.spec.value_range)
        return Loss(mean_nll, {"nll": mean_nll.detach(), "bits_per_dim": bpd})

    def initialize(self, train, generator: torch.Generator, batch_size: int = 512) -> None:
        """Data-dependent initialisation (ActNorm, Kingma & Dhariwal 2018, sec. 3.1): once per model,
        pass one batch of `batch_size` training examples (drawn with `generator`, dequantized) through
        the flow with every ActNorm set to take its scale and bias from what it sees, so that its
        outputs start with zero mean and unit variance per channel. Later calls do nothing."""
        from genlab.models.flows.layers import data_initialization

        x, y = train.tensors()
        index = torch.randperm(len(x), generator=generator)[:batch_size]
        x = x[index].to(self.device, self._dtype)
        y = None if y is None else y[index].to(self.device)
        with torch.no_grad(), data_initialization(self):
            context = self.context(y) if self.class_conditional else None
            x_dequantized, _ = self.dequantize_with_log_q(x, generator, context)
            u, _ = self.preprocess(x_dequantized)
            self.transform(self.pad_with_noise(u, generator)[0], context)

    # -- generation --------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, T^2 I) of latent_shape (T = config.temperature, 1 unless set), x = g^{-1}(f^{-1}(z))
        in the data space, (n, *spec.shape);
        quantized to the data's levels when it has them. cond: (n,) labels (or one label) for a
        conditional flow; without them it draws labels uniformly (from `generator`)."""
        cond = self.check_labels(cond, n, self.spec.num_classes if self.class_conditional else None)
        if cond is None and self.class_conditional:
            device = generator.device if generator is not None else self.device
            cond = torch.randint(self.spec.num_classes, (n,), generator=generator, device=device).to(self.device)
        context = self.context(cond)
        z = self.base_sample((n, *self.latent_shape), generator) * getattr(self.config, "temperature", 1.0)
        u, _ = self.transform.inverse(z, context)
        x = self.postprocess(self.crop_padding(u))
        return quantize(x, self.spec) if self.spec.levels is not None else x

    @property
    def _dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()
