"""RealNVP (Dinh et al. 2017) and Glow (Kingma & Dhariwal 2018): coupling flows for images and vectors.

Both are `FlowModel`s: log p(x) = log N(f(g(x')); 0, I) + log|det df/du| + log|det dg/dx'|, with x'
the dequantized data (on data with discrete levels), g the preprocessing (logit for images) and f
the flow built here from `layers`:

realnvp, images: per scale, `couplings_per_scale` checkerboard couplings, a squeeze, as many channel
    couplings, then half the channels factored out; the last scale has couplings_per_scale + 1
    checkerboard couplings (Dinh et al. 2017, sec. 4.1; ActNorm in place of their batch norm).
realnvp, vectors: `couplings` affine couplings with alternating masks and MLP conditioners, each
    after an ActNorm.
glow, images: per scale, a squeeze, then `steps` steps of ActNorm -> invertible 1x1 conv (LU) ->
    affine coupling (channel mask), then half the channels factored out with the learned prior
    (Kingma & Dhariwal 2018, fig. 2).
glow, vectors: `steps` steps of ActNorm -> LU linear map -> affine coupling (half mask): the
    "linear/LU flow" with couplings.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from genlab.data.dataset import DataSpec
from genlab.errors import ConfigError
from genlab.models.base import sized_for_cpu
from genlab.models.flows.base import Bijection, Compose, FlowConfig, FlowModel
from genlab.models.flows.layers import ActNorm, InvertibleConv1x1, Permutation, Squeeze, coupling_layer, multi_scale
from genlab.nn.builders import is_large_image
from genlab.nn.presets import SIZE_PRESETS, size_config
from genlab.registry import register

COUPLINGS = ("affine", "additive")
PADDINGS = ("noise", "none")
SCALES = ("tanh", "sigmoid")

# Training options by kind of data: a small image set overfits sooner (validation bits/dim rise
# again) than the 2D toys, which are drawn afresh in thousands of points. ema_decay 0.99 rather than
# the engine's 0.999: an average of a flow's weights over many steps is not an average of its
# densities (README, "Why these defaults").
TRAIN_DEFAULTS = {
    "image": {"max_steps": 2000, "batch_size": 128, "lr": 1e-3, "lr_schedule": "cosine", "grad_clip": 10.0, "ema_decay": 0.99},
    "vector": {"max_steps": 5000, "batch_size": 256, "lr": 1e-3, "lr_schedule": "cosine", "grad_clip": 10.0, "ema_decay": 0.99},
}
# the image networks of each size preset (genlab.nn.presets): "paper" keeps the sizes measured on
# digits; "cpu" halves the conditioners' width on images of side >= 16
REALNVP_PRESETS = {"cpu": {"couplings_per_scale": 3, "channels": 16, "blocks": 1}, "paper": {"couplings_per_scale": 3, "channels": 32, "blocks": 1}}
GLOW_PRESETS = {"cpu": {"steps": 4, "channels": 16, "blocks": 1}, "paper": {"steps": 6, "channels": 32, "blocks": 1}}
# conditioner dropout when the config leaves it None: against the overfitting of small image sets;
# the toys have data enough not to need it, and a cpu-preset run sees its images too few times
IMAGE_DROPOUT = 0.1


def _check_widths(config, field: str) -> None:
    widths = tuple(getattr(config, field))
    if not widths or any(not isinstance(w, int) or w <= 0 for w in widths):
        raise ConfigError(f"{type(config).__name__}.{field}={widths!r} must be positive integer widths, e.g. (128, 128)")
    setattr(config, field, widths)


def _dropout(config, spec: DataSpec) -> float:
    if config.dropout is not None:
        return config.dropout
    if spec.kind != "image" or sized_for_cpu(config, spec):
        return 0.0
    return IMAGE_DROPOUT


def _check_scales(spec: DataSpec, squeezes: int, model: str, scales: int, *, last_side: int = 1, odd_hint: str = "") -> None:
    """The sides must halve `squeezes` times and leave at least `last_side` pixels (RealNVP's last
    couplings are checkerboards: 2; Glow's split channels: 1)."""
    _, h, w = spec.shape
    if h % 2**squeezes or w % 2**squeezes or min(h, w) < last_side * 2**squeezes:
        if h % 2 or w % 2:
            fix = f"resize the images to sides that 2^{squeezes} divides, e.g. --data-option resize={h - h % 2**squeezes}{odd_hint}"
        else:
            fix = "set scales to at most the number of times 2 divides them"
        raise ConfigError(
            f"{model} with scales={scales} squeezes {squeezes} times and needs height and width divisible by "
            f"{2**squeezes} and at least {last_side * 2**squeezes}; data {spec.name!r} is {h}x{w}: {fix}"
        )


def _most_scales(spec: DataSpec, wanted: int) -> int:
    """RealNVP's scales for an image: `wanted`, or fewer where the sides cannot be halved wanted - 1
    times (an odd side: one scale of checkerboard couplings, no squeeze)."""
    _, h, w = spec.shape
    scales = 1
    while scales < wanted and h % 2**scales == 0 and w % 2**scales == 0:
        scales += 1
    return scales


@dataclasses.dataclass
class RealNVPConfig(FlowConfig):
    """Configuration of RealNVP (and the FlowConfig fields: preprocessing, logit_alpha,
    dequantization, class_conditional).

    couplings: vectors: the number of coupling layers (masks alternate between them).
    hidden: vectors: MLP widths of each conditioner.
    mask: vectors: "alternating" (even entries, then odd) or "half" (first half, then second).
    permutation: vectors: "none" (the masks alternate instead), "reverse" or "random" between couplings
        (with a permutation every coupling uses the same mask; the permutation mixes).
    scales: images: the number of scales; each but the last ends in a squeeze, so height and width
        must be divisible by 2^(scales - 1); None: 2 where the sides allow it, else 1 (odd sides).
    couplings_per_scale: images: checkerboard couplings, then (after the squeeze) channel couplings,
        per scale; the last scale has couplings_per_scale + 1 checkerboard couplings.
    channels: images: width of the residual conv conditioners; blocks: their residual blocks.
    preset: "auto", "cpu" or "paper": the size of the image networks (`genlab.nn.presets`; images of
        side >= 16): couplings_per_scale, channels and blocks left None take the preset's.
    coupling: "affine" (RealNVP) or "additive" (NICE, volume preserving).
    scale: bound of the affine scale: "tanh" (log s = 3 tanh(h / 3)) or "sigmoid" (Glow's).
    actnorm: an ActNorm before each coupling (data-initialised; in place of RealNVP's batch norm).
    dropout: dropout inside the conditioners while training (against overfitting small data sets);
        None: 0.1 on images, 0 on vectors and under the cpu preset (a CPU run passes over MNIST's
        55,000 images too few times to overfit them; without dropout it trains faster, as well).
    """

    couplings: int = 8
    hidden: tuple[int, ...] = (128, 128)
    mask: str = "alternating"
    permutation: str = "none"
    scales: int | None = None
    preset: str = "auto"
    couplings_per_scale: int | None = None
    channels: int | None = None
    blocks: int | None = None
    coupling: str = "affine"
    scale: str = "tanh"
    actnorm: bool = True
    dropout: float | None = None

    def validate(self) -> None:
        super().validate()
        self._choice("preset", SIZE_PRESETS)
        self._positive("couplings", *(f for f in ("scales", "couplings_per_scale", "channels") if getattr(self, f) is not None))
        if self.blocks is not None:
            self._positive("blocks", allow_zero=True)
        if self.dropout is not None:
            self._in_range("dropout", 0.0, 0.9)
        self._choice("mask", ("alternating", "half"))
        self._choice("permutation", ("none", "reverse", "random"))
        self._choice("coupling", COUPLINGS)
        self._choice("scale", SCALES)
        _check_widths(self, "hidden")


@register("realnvp", RealNVPConfig, family="flows", summary="RealNVP: affine coupling flow, multi-scale for images")
class RealNVP(FlowModel):
    """RealNVP (Dinh et al. 2017): a stack of affine coupling layers; on images, checkerboard and
    channel masks with squeezes and a multi-scale latent, on vectors, alternating masks with MLP
    conditioners. Exact log-likelihood by the change of variables (see `FlowModel`).

    >>> import torch
    >>> from genlab.data import Batch, DataSpec
    >>> spec = DataSpec("toy", kind="image", shape=(1, 8, 8), levels=17)
    >>> model = RealNVP(RealNVPConfig(channels=8, blocks=1, couplings_per_scale=1), spec)
    >>> sorted(model.loss(Batch(torch.rand(4, 1, 8, 8))).terms)
    ['bits_per_dim', 'nll']
    >>> model.sample(2, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 8, 8])
    """

    config: RealNVPConfig
    cpu_train_defaults = {"max_steps": 900}

    @property
    def train_defaults(self) -> dict:  # type: ignore[override]
        return TRAIN_DEFAULTS["image" if self.spec.kind == "image" else "vector"]

    def __init__(self, config: RealNVPConfig, spec: DataSpec) -> None:
        config = size_config(config, REALNVP_PRESETS, sized_data=is_large_image(spec))
        if config.scales is None:
            config = dataclasses.replace(config, scales=_most_scales(spec, 2) if spec.kind == "image" and len(spec.shape) == 3 else 2)
        super().__init__(config, spec)
        if spec.kind == "image":
            _check_scales(spec, config.scales - 1, "realnvp", config.scales, last_side=2)
            self.transform = multi_scale(spec.shape, config.scales, self._scale_block)
            self.latent_shape = (spec.dim,)
        else:
            self.transform = self._vector_flow(spec.shape)

    def _coupling(self, shape: Sequence[int], mask: str, parity: int) -> Bijection:
        c = self.config
        return coupling_layer(
            shape, mask, parity, kind=c.coupling, scale=c.scale, hidden=c.hidden,
            channels=c.channels, blocks=c.blocks, context_dim=self.context_dim, dropout=_dropout(c, self.spec),
        )

    def _step(self, shape: Sequence[int], mask: str, parity: int) -> list[Bijection]:
        norm = [ActNorm(shape[0])] if self.config.actnorm else []
        return norm + [self._coupling(shape, mask, parity)]

    def _scale_block(self, level: int, shape: tuple[int, ...]) -> tuple[Bijection, tuple[int, ...]]:
        """Checkerboard couplings on (C, H, W); then, except at the last scale, a squeeze to
        (4 C, H/2, W/2) and channel couplings."""
        k = self.config.couplings_per_scale
        last = level == self.config.scales - 1
        layers: list[Bijection] = []
        for i in range(k + 1 if last else k):
            layers += self._step(shape, "checkerboard", i % 2)
        if last:
            return Compose(*layers), shape
        c, h, w = shape
        squeezed = (4 * c, h // 2, w // 2)
        layers.append(Squeeze())
        for i in range(k):
            layers += self._step(squeezed, "channel", i % 2)
        return Compose(*layers), squeezed

    def _vector_flow(self, shape: tuple[int, ...]) -> Bijection:
        c = self.config
        layers: list[Bijection] = []
        for i in range(c.couplings):
            if c.permutation != "none" and i > 0:
                layers.append(Permutation(shape[0], c.permutation, seed=i))
            parity = 0 if c.permutation != "none" else i % 2
            layers += self._step(shape, c.mask, parity)
        return Compose(*layers)


@dataclasses.dataclass
class GlowConfig(FlowConfig):
    """Configuration of Glow (and the FlowConfig fields: preprocessing, logit_alpha,
    dequantization, class_conditional).

    steps: flow steps (ActNorm -> 1x1 conv -> coupling) per scale on images; in all on vectors.
    scales: images: the number of scales L (squeezes); height and width must be divisible by 2^L.
    channels: images: width of the conv conditioners; blocks: their residual blocks.
    preset: "auto", "cpu" or "paper": the size of the image networks (`genlab.nn.presets`; images of
        side >= 16): steps, channels and blocks left None take the preset's.
    hidden: vectors: MLP widths of each conditioner.
    permutation: "lu" (the invertible 1x1 convolution, LU-parameterised), or Glow's baselines
        "reverse" and "random" (fixed channel permutations).
    coupling: "affine" or "additive".
    scale: bound of the affine scale: "tanh" (log s = 3 tanh(h / 3)) or "sigmoid" (Glow's,
        s = sigmoid(h + 2) / sigmoid(2)). On digits (2,000 steps), steps=6 with "tanh" gave FID 29
        and 2.10 bits/dim, steps=4 with "sigmoid" FID 35 and 2.09 bits/dim.
    learned_prior: images: the factored-out half z_1 gets the prior N(mu(h_2), sigma(h_2)^2) learned
        from the kept half (Glow's), else N(0, I).
    dropout: dropout inside the conditioners while training (against overfitting small data sets);
        None: 0.1 on images, 0 on vectors and under the cpu preset (a CPU run passes over MNIST's
        55,000 images too few times to overfit them; without dropout it trains faster, as well).
    padding: images whose sides 2^scales does not divide (a 25x25 face): "noise" pads them at the
        bottom and right with N(0, I) noise up to the next multiple (`FlowModel.set_noise_padding`;
        the likelihood is then a bound) where the sides are at least 2^scales, "none" refuses them.
    """

    preset: str = "auto"
    steps: int | None = None
    scales: int = 2
    channels: int | None = None
    blocks: int | None = None
    hidden: tuple[int, ...] = (128, 128)
    permutation: str = "lu"
    coupling: str = "affine"
    scale: str = "tanh"
    learned_prior: bool = True
    dropout: float | None = None
    padding: str = "noise"

    def validate(self) -> None:
        super().validate()
        self._choice("preset", SIZE_PRESETS)
        self._choice("padding", PADDINGS)
        self._positive("scales", *(f for f in ("steps", "channels") if getattr(self, f) is not None))
        if self.blocks is not None:
            self._positive("blocks", allow_zero=True)
        if self.dropout is not None:
            self._in_range("dropout", 0.0, 0.9)
        self._choice("permutation", ("lu", "reverse", "random"))
        self._choice("coupling", COUPLINGS)
        self._choice("scale", SCALES)
        _check_widths(self, "hidden")


@register("glow", GlowConfig, family="flows", summary="Glow: ActNorm, invertible 1x1 convolution, affine coupling")
class Glow(FlowModel):
    """Glow (Kingma & Dhariwal 2018): steps of ActNorm -> invertible 1x1 convolution (LU) -> affine
    coupling, multi-scale with a learned prior on images; on vectors ActNorm -> LU linear ->
    coupling. Exact log-likelihood by the change of variables (see `FlowModel`).

    >>> import torch
    >>> from genlab.data import DataSpec
    >>> model = Glow(GlowConfig(steps=2, hidden=(16,)), DataSpec("toy", kind="vector", shape=(2,)))
    >>> model.log_prob(torch.randn(5, 2)).shape
    torch.Size([5])
    """

    config: GlowConfig

    @property
    def train_defaults(self) -> dict:  # type: ignore[override]
        return TRAIN_DEFAULTS["image" if self.spec.kind == "image" else "vector"]

    def __init__(self, config: GlowConfig, spec: DataSpec) -> None:
        config = size_config(config, GLOW_PRESETS, sized_data=is_large_image(spec))
        super().__init__(config, spec)
        if spec.kind == "image":
            shape = tuple(spec.shape)
            multiple = 2**config.scales
            rows, columns = -shape[1] % multiple, -shape[2] % multiple
            # pads of fewer pixels than a side: more scales than the image has room for stay refused
            if config.padding == "noise" and (rows or columns) and min(shape[1:]) >= multiple:
                shape = self.set_noise_padding(rows, columns)
            _check_scales(dataclasses.replace(spec, shape=shape), config.scales, "glow", config.scales, odd_hint=", or --set padding=noise")
            self.transform = multi_scale(shape, config.scales, self._scale_block)
            self.latent_shape = (math.prod(shape),)
        else:
            self.transform = Compose(*[layer for i in range(config.steps) for layer in self._step(spec.shape, i)])

    def _step(self, shape: Sequence[int], index: int) -> list[Bijection]:
        """ActNorm -> 1x1 conv (or a fixed permutation) -> coupling on the first half of the features."""
        c = self.config
        features = shape[0]
        if c.permutation == "lu":
            mixing: Bijection = InvertibleConv1x1(features, seed=index)
        else:
            mixing = Permutation(features, c.permutation, seed=index)
        mask = "channel" if len(shape) == 3 else "half"
        coupling = coupling_layer(
            shape, mask, 0, kind=c.coupling, scale=c.scale, hidden=c.hidden,
            channels=c.channels, blocks=c.blocks, context_dim=self.context_dim, dropout=_dropout(c, self.spec),
        )
        return [ActNorm(features), mixing, coupling]

    def _scale_block(self, level: int, shape: tuple[int, ...]) -> tuple[Bijection, tuple[int, ...]]:
        """Squeeze (C, H, W) -> (4 C, H/2, W/2), `steps` flow steps, and (but at the last scale) the
        learned prior: an affine coupling that transforms the half to be factored out (the first
        2 C channels) given the kept half (channel mask, parity 1), i.e.
        z_1 -> (z_1 - mu(h_2)) / sigma(h_2) with log-det -sum log sigma."""
        c, h, w = shape
        squeezed = (4 * c, h // 2, w // 2)
        layers: list[Bijection] = [Squeeze()]
        for i in range(self.config.steps):
            layers += self._step(squeezed, 100 * level + i)
        if self.config.learned_prior and level < self.config.scales - 1:
            # FactorOut keeps channels [2c:]; the channel mask with parity 1 passes exactly those
            layers.append(
                coupling_layer(
                    squeezed, "channel", 1, kind="affine", scale="tanh", channels=self.config.channels,
                    blocks=self.config.blocks, context_dim=self.context_dim, dropout=_dropout(self.config, self.spec),
                )
            )
        return Compose(*layers), squeezed
