"""Autoregressive and coupling transforms of vectors: MAF / IAF (affine) and neural spline flows.

All act on (B, D) vectors, in the normalizing direction (data x -> latent z) of `Bijection`.

- `MaskedAutoregressiveTransform` (Papamakarios et al. 2017, "Masked Autoregressive Flow for
  Density Estimation", eq. 3-5): with (mu_i, alpha_i) = MADE(x_<i),

      z_i = (x_i - mu_i(x_<i)) exp(-alpha_i(x_<i)),    log|det dz/dx| = -sum_i alpha_i.

  The Jacobian is triangular in the MADE's ordering. The density of x takes one MADE pass; the
  inverse x_i = z_i exp(alpha_i) + mu_i needs x_<i first, so D passes.
  `Inverse(MaskedAutoregressiveTransform(...))` is the inverse autoregressive flow (Kingma et al.
  2016, "Improved Variational Inference with Inverse Autoregressive Flow"): its sampling direction
  is the MAF's density direction, one pass, and its density direction takes D passes.
- `RationalQuadraticAutoregressiveTransform` (NSF-AR, Durkan et al. 2019, sec. 3.3): the same
  with z_i = g(x_i; theta_i(x_<i)), g the monotone rational-quadratic spline of `splines.py`.
- `RationalQuadraticCouplingTransform` (NSF-C, Durkan et al. 2019, sec. 3.2; the coupling of Dinh
  et al. 2017): the features split by a mask into x_A (kept) and x_B (transformed),

      z_A = x_A,   z_B = g(x_B; theta(x_A, c)),   log|det dz/dx| = sum_{i in B} log g'(x_i),

  one pass in both directions.

Every transform takes an optional context c (B, C) (e.g. a one-hot class label) that its
conditioner sees beside the inputs, and starts at the identity (its conditioner's last layer is
zero: affine shift and log-scale 0, uniform spline bins with unit derivatives).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from genlab.errors import ConfigError
from genlab.models.flows.base import Bijection
from genlab.models.flows.splines import rational_quadratic_spline, spline_parameter_count, split_spline_parameters
from genlab.nn.masked import MADE
from genlab.nn.mlp import MLP


def soft_clamp(x: Tensor, bound: float) -> Tensor:
    """bound * tanh(x / bound): the identity near 0, smoothly limited to (-bound, bound).

    Used on log-scales: an unbounded exp(alpha) lets one bad step blow a flow up (scale -> inf or 0),
    and a hard clamp stops the gradient at the limit."""
    return bound * torch.tanh(x / bound)


def _zero_made_output(made: MADE) -> None:
    with torch.no_grad():
        made.output_layer.weight.zero_()
        if made.output_layer.bias is not None:
            made.output_layer.bias.zero_()
        if made.output_layer.context is not None:
            made.output_layer.context.weight.zero_()


class AutoregressiveTransform(Bijection):
    """z_i = tau(x_i; theta_i(x_<i, c)) with theta = MADE(x, c): the base of MAF and NSF-AR.

    Subclasses set `params_per_feature` and implement `elementwise(x, params, inverse)`, the
    elementwise map tau (or its inverse) with per-element log-derivatives.
    x: (B, D); context: (B, C) or None; params: (B, D, params_per_feature).
    """

    params_per_feature: int = 1

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (64, 64),
        *,
        context_features: int = 0,
        order: Tensor | None = None,
        activation: str = "relu",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.features = int(features)
        self.made = MADE(
            features,
            hidden,
            outputs_per_feature=self.params_per_feature,
            context_features=context_features,
            order=order,
            activation=activation,
            seed=seed,
        )
        _zero_made_output(self.made)  # start at the identity

    @property
    def order(self) -> Tensor:
        """The autoregressive ordering: z_i depends on x_j only for order[j] < order[i] (and on x_i)."""
        return self.made.order

    def elementwise(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """tau(x; params) (or tau^{-1}) and the elementwise log|dtau/dx| (of the direction applied), both (B, D)."""
        raise NotImplementedError

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One MADE pass: z = tau(x; MADE(x, c)); log|det dz/dx| (B,)."""
        params = self.made(x, context)  # (B, D) -> (B, D, P)
        z, log_derivative = self.elementwise(x, params, inverse=False)
        return z, log_derivative.sum(-1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """D MADE passes: after pass t the t first variables of the ordering are exact (variable i
        needs only x_<i), so after D passes all are; log|det dx/dz| (B,) from the last pass."""
        x = torch.zeros_like(z)
        log_derivative = torch.zeros_like(z)
        for _ in range(self.features):
            x, log_derivative = self.elementwise(z, self.made(x, context), inverse=True)
        return x, log_derivative.sum(-1)


class MaskedAutoregressiveTransform(AutoregressiveTransform):
    """Affine MAF layer (Papamakarios et al. 2017): z_i = (x_i - mu_i) exp(-alpha_i),
    (mu_i, alpha_i) = MADE(x_<i, c), with alpha_i = b tanh(a_i / b) a soft-clamped log-scale
    (b = log_scale_bound). log|det dz/dx| = -sum_i alpha_i.

    Density in one pass, inversion in D; `Inverse(...)` of it is an IAF (Kingma et al. 2016).

    >>> import torch
    >>> t = MaskedAutoregressiveTransform(3, (16,))
    >>> x = torch.randn(4, 3)
    >>> z, log_det = t(x)
    >>> torch.allclose(t.inverse(z)[0], x, atol=1e-5), log_det.shape
    (True, torch.Size([4]))
    """

    params_per_feature = 2

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64), *, log_scale_bound: float = 3.0, **kwargs) -> None:
        """kwargs: context_features, order, activation, seed (see `AutoregressiveTransform`)."""
        if not log_scale_bound > 0:
            raise ConfigError(f"log_scale_bound={log_scale_bound!r} must be > 0")
        super().__init__(features, hidden, **kwargs)
        self.log_scale_bound = float(log_scale_bound)

    def shift_and_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """(B, D, 2) -> mu (B, D), alpha (B, D) soft-clamped."""
        shift, raw = params.unbind(-1)
        return shift, soft_clamp(raw, self.log_scale_bound)

    def elementwise(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        shift, log_scale = self.shift_and_log_scale(params)
        if inverse:
            return x * torch.exp(log_scale) + shift, log_scale
        return (x - shift) * torch.exp(-log_scale), -log_scale


class RationalQuadraticAutoregressiveTransform(AutoregressiveTransform):
    """NSF-AR layer (Durkan et al. 2019): z_i = g(x_i; theta_i(x_<i, c)), g a K-bin monotone
    rational-quadratic spline on [-bound, bound] with identity tails (`splines.py`), its 3K - 1
    parameters per variable from a MADE. Density in one pass, inversion in D."""

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64), *, bins: int = 8, bound: float = 5.0, **kwargs) -> None:
        """kwargs: context_features, order, activation, seed (see `AutoregressiveTransform`)."""
        if bins < 2:
            raise ConfigError(f"bins={bins!r} must be >= 2")
        self.params_per_feature = spline_parameter_count(bins)
        super().__init__(features, hidden, **kwargs)
        self.bins, self.bound = int(bins), float(bound)

    def elementwise(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        widths, heights, derivatives = split_spline_parameters(params, self.bins)
        return rational_quadratic_spline(x, widths, heights, derivatives, inverse=inverse, bound=self.bound)


def half_mask(features: int, *, second: bool = True) -> Tensor:
    """A coupling mask (D,) bool, True where transformed: the second half of the features
    (indices >= D // 2), or the first half with second=False."""
    upper = torch.arange(features) >= features // 2
    return upper if second else ~upper


class RationalQuadraticCouplingTransform(Bijection):
    """NSF-C layer (Durkan et al. 2019): z_A = x_A, z_B = g(x_B; theta(x_A, c)), g the K-bin
    rational-quadratic spline, theta from an MLP conditioner (its last layer zero: the identity at
    start). mask: (D,) bool, True for the transformed features B (default `half_mask`); both
    parts must be non-empty. x: (B, D) -> z (B, D), log|det| (B,); one pass each way."""

    def __init__(
        self,
        features: int,
        hidden: Sequence[int] = (64, 64),
        *,
        mask: Tensor | None = None,
        context_features: int = 0,
        bins: int = 8,
        bound: float = 5.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if bins < 2:
            raise ConfigError(f"bins={bins!r} must be >= 2")
        mask = half_mask(features) if mask is None else torch.as_tensor(mask, dtype=torch.bool).flatten()
        if mask.numel() != features or bool(mask.all()) or not bool(mask.any()):
            raise ConfigError(
                f"a coupling mask needs {features} entries with both kept and transformed features, got {mask.tolist()}; "
                "couplings need D >= 2 (use transform='autoregressive' for D = 1)"
            )
        self.features, self.bins, self.bound = int(features), int(bins), float(bound)
        self.register_buffer("transformed", torch.nonzero(mask).flatten())
        self.register_buffer("kept", torch.nonzero(~mask).flatten())
        self.conditioner = MLP(
            len(self.kept) + context_features,
            len(self.transformed) * spline_parameter_count(bins),
            hidden=hidden,
            activation=activation,
            zero_init_last=True,
        )
        self.context_features = context_features

    def _spline(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        h = x[:, self.kept]
        if self.context_features:
            if context is None:
                raise ValueError(f"this coupling was built with context_features={self.context_features}; pass context")
            h = torch.cat([h, context], dim=-1)
        params = self.conditioner(h).view(x.shape[0], len(self.transformed), -1)  # (B, |A| + C) -> (B, |B|, 3K - 1)
        widths, heights, derivatives = split_spline_parameters(params, self.bins)
        y_b, log_derivative = rational_quadratic_spline(
            x[:, self.transformed], widths, heights, derivatives, inverse=inverse, bound=self.bound
        )
        return x.index_copy(1, self.transformed, y_b), log_derivative.sum(-1)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._spline(x, context, inverse=False)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._spline(z, context, inverse=True)
