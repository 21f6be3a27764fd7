"""Flows of vectors (2D toys, tables, flattened images): MAF, IAF and neural spline flows.

Each model stacks K transforms of `autoregressive.py`, with a feature permutation between
consecutive ones (so every variable is transformed given every other somewhere in the stack) and,
by default, an ActNorm before each (data-initialised by `FlowModel.initialize_from_data`, so the
first transform sees standardised data). In the normalizing direction x -> z:

    maf: [ActNorm -> MAF layer -> Permutation] x K            (Papamakarios et al. 2017)
    iaf: [ActNorm -> Inverse(MAF layer) -> Permutation] x K   (Kingma et al. 2016)
    nsf: [ActNorm -> spline coupling or spline MAF layer -> Permutation] x K   (Durkan et al. 2019)

    log p(x) = log N(z; 0, I) + sum_k log|det dh_k / dh_{k-1}|.

The cost of each direction (D = number of features):

    =====  ===================  =================================
    model  log p(x) (training)  sampling
    =====  ===================  =================================
    maf    1 pass per layer     D passes per layer
    iaf    D passes per layer   1 pass per layer
    nsf-C  1 pass per layer     1 pass per layer
    nsf-AR 1 pass per layer     D passes per layer
    =====  ===================  =================================

Data with more than one axis (images) is flattened to (B, D) first. With class_conditional=True
the one-hot label is the context of every MADE / coupling conditioner (a conditional flow p(x|y)).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from genlab.data.dataset import DataSpec
from genlab.errors import ConfigError
from genlab.models.flows.autoregressive import (
    MaskedAutoregressiveTransform,
    RationalQuadraticAutoregressiveTransform,
    RationalQuadraticCouplingTransform,
)
from genlab.models.flows.base import Bijection, Compose, FlowConfig, FlowModel, Inverse
from genlab.models.flows.layers import ActNorm, Flatten, Permutation
from genlab.nn.activations import ACTIVATIONS
from genlab.registry import register

PERMUTATIONS = ("reverse", "random", "none")
NSF_TRANSFORMS = ("coupling", "autoregressive")

# No EMA: the cosine decay to 0 already settles the weights, and an average of a flow's weights is
# not an average of its densities; the engine's 0.999 would also keep a share of the first steps'
# weights after a run this short (README, "Why these defaults").
_TOY_TRAIN_DEFAULTS: dict[str, Any] = {"max_steps": 3000, "batch_size": 256, "lr": 1e-3, "lr_schedule": "cosine", "ema_decay": 0.0}


def _check_stack(config: "_VectorFlowConfig") -> None:
    name = type(config).__name__
    config._positive("transforms")
    config._choice("permutation", PERMUTATIONS)
    config._choice("activation", tuple(ACTIVATIONS))
    widths = tuple(config.hidden)
    if not widths or any(not isinstance(w, int) or w <= 0 for w in widths):
        raise ConfigError(f"{name}.hidden={widths!r} must be one or more positive integer widths, e.g. (64, 64)")
    config.hidden = widths


@dataclasses.dataclass
class _VectorFlowConfig(FlowConfig):
    transforms: int = 5
    hidden: tuple[int, ...] = (64, 64)
    permutation: str = "reverse"
    actnorm: bool = True
    activation: str = "relu"

    def validate(self) -> None:
        super().validate()
        _check_stack(self)


@dataclasses.dataclass
class MAFConfig(_VectorFlowConfig):
    """Configuration of `maf` and `iaf` (and the fields every vector flow shares; see also `FlowConfig`:
    preprocessing, dequantization, class_conditional).

    transforms: K, the number of masked autoregressive layers.
    hidden: the MADE's hidden widths in each layer.
    permutation: between layers, "reverse" the features (the MAF paper's choice), a fixed seeded
        "random" permutation per layer, or "none".
    actnorm: an ActNorm (data-initialised per-feature affine map) before each layer.
    activation: of the MADE's hidden units (a name of `genlab.nn.ACTIVATIONS`).
    log_scale_bound: b of the soft clamp alpha = b tanh(a / b) on each layer's log-scale, so one
        layer scales a variable by at most e^b (keeps early training finite on sharp data).
    """

    log_scale_bound: float = 3.0

    def validate(self) -> None:
        super().validate()
        self._positive("log_scale_bound")


@dataclasses.dataclass
class NSFConfig(_VectorFlowConfig):
    """Configuration of `nsf`, the neural spline flow (Durkan et al. 2019); see `MAFConfig` for
    hidden, permutation, actnorm and activation.

    transforms: K, the number of spline layers. 8 by default: on 8gaussians (3,000 steps) 8
        coupling layers reached a test NLL of 2.857 nats, 5 reached 2.861.

    transform: "coupling" (NSF-C: half the features transformed given the other half; one pass
        both ways) or "autoregressive" (NSF-AR: a MADE gives each variable's spline; density in
        one pass, sampling in D).
    bins: K, the number of spline bins.
    bound: B, the spline acts on [-B, B] and is the identity outside (after ActNorm, the data
        are standardised, so B = 4 holds all but a few of them in the spline's range; on
        8gaussians B = 4 gave a test NLL of 2.861 nats, B = 5 2.868).
    """

    transforms: int = 8
    transform: str = "coupling"
    bins: int = 8
    bound: float = 4.0

    def validate(self) -> None:
        super().validate()
        self._choice("transform", NSF_TRANSFORMS)
        if self.bins < 2:
            raise ConfigError(f"NSFConfig.bins={self.bins!r} must be >= 2")
        self._positive("bound")


class VectorFlow(FlowModel):
    """Base of the vector flows: flattens the data, then [ActNorm -> layer(k) -> Permutation] x K,
    where `layer(k)` (a Bijection on (B, D)) is the one hook a model overrides."""

    config: _VectorFlowConfig
    train_defaults = _TOY_TRAIN_DEFAULTS

    def __init__(self, config: _VectorFlowConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.features = spec.dim
        self.context_features = self.context_dim or 0
        parts: list[Bijection] = []
        if len(spec.shape) != 1:
            parts.append(Flatten(spec.shape))
            self.latent_shape = (self.features,)
        for k in range(config.transforms):
            if config.actnorm:
                parts.append(ActNorm(self.features))
            parts.append(self.layer(k))
            if k < config.transforms - 1 and config.permutation != "none" and self.features > 1:
                parts.append(Permutation(self.features, config.permutation, seed=k))
        self.transform = Compose(*parts)

    def layer(self, k: int) -> Bijection:
        """The k-th transform of the stack, on (B, D) with context (B, C) or None."""
        raise NotImplementedError


@register("maf", MAFConfig, family="flows", summary="Masked autoregressive flow: affine MADE layers; exact density in one pass")
class MAF(VectorFlow):
    """Masked autoregressive flow (Papamakarios et al. 2017): K affine autoregressive layers
    z_i = (x_i - mu_i(x_<i)) exp(-alpha_i(x_<i)), each a MADE. The density takes one pass per
    layer (fast training and evaluation); sampling takes D passes per layer.

    >>> import torch, genlab
    >>> model = genlab.create("maf", data=genlab.data.load("8gaussians", n=200), transforms=2, hidden=(16,))
    >>> model.log_prob(torch.zeros(3, 2)).shape, model.sample(4, generator=torch.Generator().manual_seed(0)).shape
    (torch.Size([3]), torch.Size([4, 2]))
    """

    config: MAFConfig

    def layer(self, k: int) -> Bijection:
        return MaskedAutoregressiveTransform(
            self.features,
            self.config.hidden,
            log_scale_bound=self.config.log_scale_bound,
            context_features=self.context_features,
            activation=self.config.activation,
            seed=k,
        )


@register("iaf", MAFConfig, family="flows", summary="Inverse autoregressive flow: sampling in one pass, density in D")
class IAF(MAF):
    """Inverse autoregressive flow (Kingma et al. 2016): each layer is the inverse of a MAF layer,
    x_i = z_i exp(alpha_i(z_<i)) + mu_i(z_<i) in the sampling direction, so a sample (and its own
    log-density) takes one pass per layer.

    Maximum-likelihood training needs log p(x) of data, the inverse direction: D MADE passes per
    layer (D sequential steps). That is cheap for the 2D toys and small tables, slow for images;
    IAF is at its best where samples are scored (variational inference, reverse KL: see
    `genlab.models.flows.energy`). Same config as `maf`.
    """

    def layer(self, k: int) -> Bijection:
        return Inverse(super().layer(k))


@register("nsf", NSFConfig, family="flows", summary="Neural spline flow: rational-quadratic spline couplings or autoregressive layers")
class NSF(VectorFlow):
    """Neural spline flow (Durkan et al. 2019): K layers of monotone rational-quadratic splines with
    `bins` bins on [-bound, bound] (identity tails), each variable's spline given by a coupling MLP
    of the other half (transform="coupling") or by a MADE of the preceding variables
    (transform="autoregressive").

    >>> import torch, genlab
    >>> model = genlab.create("nsf", data=genlab.data.load("moons", n=200), transforms=2, hidden=(16,))
    >>> model.log_prob(torch.zeros(3, 2)).shape
    torch.Size([3])
    """

    config: NSFConfig

    def __init__(self, config: NSFConfig, spec: DataSpec) -> None:
        if config.transform == "coupling" and spec.dim < 2:
            raise ConfigError(f"nsf transform='coupling' needs data of at least 2 dimensions ({spec.name!r} has {spec.dim}); "
                              "use transform='autoregressive'")
        super().__init__(config, spec)

    def layer(self, k: int) -> Bijection:
        c = self.config
        if c.transform == "coupling":
            return RationalQuadraticCouplingTransform(
                self.features, c.hidden, context_features=self.context_features,
                bins=c.bins, bound=c.bound, activation=c.activation,
            )
        return RationalQuadraticAutoregressiveTransform(
            self.features, c.hidden, context_features=self.context_features,
            bins=c.bins, bound=c.bound, activation=c.activation, seed=k,
        )
