"""PixelCNN (van den Oord et al. 2016a) and gated PixelCNN (van den Oord et al. 2016b) on images.

p(x) = prod_{i, j} prod_c p(x_{i,j,c} | x_<(i,j), x_{i,j,<c}): pixels in raster order, and within a
pixel the colour channels in order (R, then G given R, then B given R and G). Masked convolutions
(`genlab.nn.masked`) give every conditional in one pass; sampling makes H * W * C passes.

- `pixelcnn`: a 7x7 type-A masked convolution, then residual blocks of 1x1 -> kxk -> 1x1 type-B
  masked convolutions (Pixel RNN paper, fig. 5). Its receptive field has the known blind spot
  (pixels up and to the right beyond the kernel's reach are never seen).
- `gated-pixelcnn`: vertical and horizontal stacks with gated activations, no blind spot, and
  class conditioning added inside every gate (the paper's h-conditioning).

Outputs (config `output`): a categorical over the data's levels (spec.levels: 17 for digits, 256 for
8-bit images), or a discretized logistic mixture (Salimans et al. 2017) whose colour channels are made
dependent by the channel masks rather than PixelCNN++'s linear mean coefficients.

Sampling cost: every masked layer is causal in rows (output rows <= i depend on input rows <= i
only), so while drawing row i the network runs on rows 0..i alone: (H + 1) / (2H) of the work of
full-image passes (0.56 on 8x8 digits). Activations are not cached between passes (as fast
PixelCNN++ generation does), so every pass recomputes the rows above.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.config import Config
from genlab.data.dataset import Batch, DataSpec
from genlab.data.transforms import levels_of
from genlab.errors import ConfigError
from genlab.models.autoregressive.conditioning import ClassConditionalMixin, one_hot
from genlab.models.autoregressive.outputs import make_output
from genlab.models.base import GenerativeModel, Loss
from genlab.nn.builders import is_large_image
from genlab.nn.masked import GatedPixelCNNLayer, MaskedConv2d, check_dilations
from genlab.nn.presets import SIZE_PRESETS, size_config
from genlab.registry import register

IMAGE_OUTPUTS = ("categorical", "logistic_mixture")


@dataclasses.dataclass
class PixelCNNConfig(Config):
    """Configuration of the PixelCNN.

    channels: feature maps of the residual stream (2h in the Pixel RNN paper's residual block; the
        block's inner 1x1 -> kxk -> 1x1 layers use channels // 2). A multiple of 2 * C for C colours.
    blocks: number of residual blocks after the first type-A convolution.
    kernel_size: the blocks' masked kxk convolution (odd).
    dilations: dilation of each block's kxk convolution, cycled over the blocks (None: the preset's).
        A 3x3 block with dilation d reaches d rows further up: with 5 undilated blocks a pixel sees
        about 8 rows above it, too few for a 28x28 digit's shape; dilations (1, 2, 4, 8) over 8 blocks
        see 33 (Yu & Koltun 2016's dilated stacks, in the masked form of WaveNet).
    first_kernel_size: the type-A convolution on the image (odd; 7 in the paper).
    head_channels: width of the two 1x1 layers before the output (a multiple of C).
    output: "categorical" over the data's levels, or "logistic_mixture" (discretized, Salimans et al. 2017).
    components: mixture components K for output="logistic_mixture".
    dropout: dropout on the residual branches (None: the preset's; 0.2, "cpu" on images of side
        >= 16: 0). Digits has 1,437 training images: without dropout the PixelCNN's validation NLL
        was lowest (1.83 bits/dim) near step 1,250 and rose after (1.87 at 2,250); with 0.2 it stayed
        between 1.78 and 1.80 from step 1,250 to 2,250. A CPU run sees MNIST's 55,000 about twice,
        too few passes to overfit, and drawing dropout's random masks is a sizeable share of its step.
    class_conditional: condition on the data's labels: a learned vector per class added to every
        layer's pre-activations (van den Oord et al. 2016b, eq. 4). `log_prob(x)` is then
        log sum_y p(y) p(x|y), p(y) the training labels' frequencies.
    preset: "auto", "cpu" or "paper": the network's size on images of side >= 16
        (`genlab.nn.presets`); channels, blocks, head_channels and output left None take the preset's
        (`size_presets`). "cpu" halves the widths and predicts a logistic mixture in place of a
        softmax over 256 levels, whose output layer would cost more than the rest of the network.
    """

    # the network of each size preset; "paper" keeps the sizes measured on digits
    size_presets: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu": {"channels": 24, "blocks": 8, "dilations": (1, 2, 4, 8), "head_channels": 32, "output": "logistic_mixture", "dropout": 0.0},
        "paper": {"channels": 64, "blocks": 6, "dilations": (1,), "head_channels": 128, "output": "categorical", "dropout": 0.2},
    }
    # runs saved before `dilations` existed were built without dilation
    added_fields: ClassVar[dict[str, Any]] = {"dilations": (1,)}

    preset: str = "auto"
    channels: int | None = None
    blocks: int | None = None
    kernel_size: int = 3
    dilations: tuple[int, ...] | None = None
    first_kernel_size: int = 7
    head_channels: int | None = None
    output: str | None = None
    components: int = 5
    dropout: float | None = None
    class_conditional: bool = False

    def validate(self) -> None:
        self._choice("preset", SIZE_PRESETS)
        sized = [f for f in ("channels", "blocks", "head_channels") if getattr(self, f) is not None]
        self._positive(*sized, "kernel_size", "first_kernel_size", "components")
        check_dilations(type(self).__name__, "dilations", self.dilations)
        if self.output is not None:
            self._choice("output", IMAGE_OUTPUTS)
        if self.dropout is not None:
            self._in_range("dropout", 0.0, 0.99)
        for field in ("kernel_size", "first_kernel_size"):
            if getattr(self, field) % 2 != 1:
                raise ConfigError(f"{type(self).__name__}.{field}={getattr(self, field)} must be odd, so a pixel is the kernel's centre")

    def sized(self, spec: DataSpec) -> "PixelCNNConfig":
        """This config with the preset resolved and the fields it sizes filled in for `spec`; the
        preset's widths are rounded up to a multiple of 2 C for C colours (the masks split them)."""
        multiple = 2 * spec.shape[0] if len(spec.shape) == 3 else 2
        presets = {
            name: {k: -(-v // multiple) * multiple if k in ("channels", "head_channels") else v for k, v in values.items()}
            for name, values in self.size_presets.items()
        }
        return size_config(self, presets, sized_data=is_large_image(spec))


@dataclasses.dataclass
class GatedPixelCNNConfig(PixelCNNConfig):
    """Configuration of the gated PixelCNN: as PixelCNNConfig, with `blocks` the number of gated layers
    after the first and `channels` the width p of each stack (each layer holds about 21 p^2 weights).
    Its layers are not dilated: `dilations` stays unset."""

    size_presets: ClassVar[dict[str, dict[str, Any]]] = {
        "cpu": {"channels": 16, "blocks": 5, "head_channels": 32, "output": "logistic_mixture", "dropout": 0.2},
        "paper": {"channels": 32, "blocks": 6, "head_channels": 128, "output": "categorical", "dropout": 0.2},
    }
    added_fields: ClassVar[dict[str, Any]] = {}

    def validate(self) -> None:
        super().validate()
        if self.dilations is not None:
            raise ConfigError(f"{type(self).__name__}.dilations={self.dilations}: the gated stacks take no dilation; leave it unset, or use 'pixelcnn' for dilated blocks")


class _PixelCNNBase(ClassConditionalMixin, GenerativeModel):
    """What both PixelCNNs share: levels <-> network input, the output distribution, the loss,
    log_prob and pixel-by-pixel sampling. Subclasses build `network(x, cond) -> params`."""

    config: PixelCNNConfig
    exact_likelihood = True
    data_kinds = ("image",)

    def __init__(self, config: PixelCNNConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        if spec.kind != "image" or len(spec.shape) != 3:
            raise ConfigError(f"{self.name or 'pixelcnn'} models images (C, H, W); {spec.name!r} is {spec.kind} of shape {spec.shape}; use 'made' for vectors")
        if spec.levels is None:
            raise ConfigError(f"{self.name or 'pixelcnn'} models discrete pixel levels, but {spec.name!r} has levels=None; quantize the images")
        self._init_class_prior(config)
        self.colours = spec.shape[0]
        for field in ("channels", "head_channels"):
            multiple = 2 * self.colours
            if getattr(config, field) % multiple:
                raise ConfigError(f"{type(config).__name__}.{field}={getattr(config, field)} must be a multiple of {multiple} (2 x {self.colours} colour channels)")
        self.output = make_output(config.output, levels=spec.levels, components=config.components)
        self.cond_dim = self.num_classes or 0

    # -- network -------------------------------------------------------------------------
    def trunk(self, x: Tensor, cond: Tensor | None) -> Tensor:
        """(B, C, h, W) network input, cond (B, num_classes) one-hot or None -> (B, F, h, W) features."""
        raise NotImplementedError

    def _build_head(self, in_channels: int) -> None:
        c, p = self.colours, self.output.params_per_dim
        self.head = nn.ModuleList(
            [
                MaskedConv2d(in_channels, self.config.head_channels, 1, mask_type="B", groups=c),
                MaskedConv2d(self.config.head_channels, c * p, 1, mask_type="B", groups=c),
            ]
        )

    def network_input(self, values: Tensor) -> Tensor:
        """Levels v (B, C, h, W) long -> 2 v / (L - 1) - 1 in [-1, 1], in the network's dtype."""
        return 2.0 * values.to(self.head[0].weight.dtype) / (self.spec.levels - 1) - 1.0

    def conditionals(self, x: Tensor, cond: Tensor | None) -> Tensor:
        """Parameters of every p(x_{i,j,c} | earlier pixels and colours) from the network input
        x (B, C, h, W) and one-hot labels cond (B, num_classes) or None -> (B, C, h, W, P)."""
        h = self.trunk(x, cond)
        h = self.head[1](F.relu(self.head[0](F.relu(h))))  # (B, C * P, h, W), colour-major blocks
        b, _, rows, width = h.shape
        return h.view(b, self.colours, self.output.params_per_dim, rows, width).permute(0, 1, 3, 4, 2)

    def network(self, values: Tensor, labels: Tensor | None) -> Tensor:
        """`conditionals` from levels (B, C, h, W) and labels (B,) or None -> (B, C, h, W, P)."""
        x = self.network_input(values)
        return self.conditionals(x, one_hot(labels, self.num_classes, x.dtype))

    # -- likelihood ----------------------------------------------------------------------
    def _conditional_log_prob(self, values: Tensor, labels: Tensor | None) -> Tensor:
        params = self.network(values, labels)
        return self.output.log_prob(params, values).flatten(1).sum(1)

    def log_prob_per_dimension(self, x: Tensor) -> Tensor:
        """log P(x_i | x_<i) of every sub-pixel in the raster order, (B, C, H, W) in nats, summing to
        `log_prob(x)`: where an image is unusual. Unconditional models only (a mixture over labels
        does not split by pixel)."""
        if not self.has_per_dimension_log_prob:
            raise ConfigError("per-pixel log-probabilities need class_conditional=False; a mixture over labels does not split by pixel")
        values = levels_of(x, self.spec)
        return self.output.log_prob(self.network(values, None), values)

    @property
    def has_per_dimension_log_prob(self) -> bool:
        return self.num_classes is None

    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """log P(x) (or log P(x | y) for labels cond (B,)) of the stored levels, in nats: (B, C, H, W) -> (B,)."""
        values = levels_of(x, self.spec)
        if self.num_classes is not None and cond is None:
            return self._marginalise_labels(values, self._conditional_log_prob)
        labels = None if cond is None else self.check_labels(cond, x.shape[0], self.num_classes)
        return self._conditional_log_prob(values, labels)

    def likelihood_kind(self) -> str:
        return "discrete"

    def initialize(self, train, generator: torch.Generator) -> None:
        """Counts the class prior p(y) of a class-conditional model."""
        self._set_class_prior(train)

    def loss(self, batch: Batch) -> Loss:
        """Mean -log P(x) per dimension in nats; terms give -log P(x) per image and bits/dim."""
        if self.num_classes is not None and batch.y is None:
            raise ConfigError("class_conditional=True but the batch has no labels; load labelled data")
        values = levels_of(batch.x, self.spec)
        nll = -self._conditional_log_prob(values, batch.y if self.num_classes is not None else None).mean()
        dim = self.spec.dim
        return Loss(nll / dim, {"nll": nll.detach(), "bits_per_dim": nll.detach() / (dim * math.log(2.0))})

    # -- sampling ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """n images (n, C, H, W) in the data's levels and value range, drawn pixel by pixel and colour by
        colour (H * W * C passes, each on rows 0..i only). cond: labels (n,) for a class-conditional
        model (None draws y ~ p(y))."""
        labels = self._sample_labels(n, cond, generator)
        c, height, width = self.spec.shape
        values = torch.zeros(n, c, height, width, dtype=torch.long, device=self.device)
        for i in range(height):
            for j in range(width):
                for channel in range(c):
                    params = self.network(values[:, :, : i + 1], labels)[:, channel, i, j]  # (n, P)
                    values[:, channel, i, j] = self.output.sample(params, generator)
        low, high = self.spec.value_range
        return low + values.to(torch.get_default_dtype()) * ((high - low) / (self.spec.levels - 1))


@register("pixelcnn", PixelCNNConfig, family="autoregressive", summary="PixelCNN: masked convolutions, exact discrete likelihood")
class PixelCNN(_PixelCNNBase):
    """PixelCNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks"): a type-A masked
    convolution, residual blocks of type-B masked convolutions, and a per-pixel output head.

    Residual block (their fig. 5): h + W_3 * relu(W_2 * relu(W_1 * relu(h) + V_y)), with W_1, W_3 1x1
    and W_2 kxk masked convolutions and V_y a per-class bias (class-conditional models only).

    >>> import torch
    >>> from genlab.data import DataSpec
    >>> spec = DataSpec("toy", kind="image", shape=(1, 4, 4), levels=4)
    >>> model = PixelCNN(PixelCNNConfig(channels=8, blocks=1, head_channels=8), spec)
    >>> model.sample(2, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 4, 4])
    """

    config: PixelCNNConfig
    # ema_decay 0.99: the engine's 0.999 averages over ~1,000 steps, half of this short run, so the
    # average still holds the early, poor weights (README, "Why these defaults")
    train_defaults = {"max_steps": 2000, "lr": 1e-3, "batch_size": 64, "ema_decay": 0.99}
    # sample_every 700: a 64-image grid is 784 network passes, as long as ~150 training steps
    cpu_train_defaults = {"max_steps": 1400, "sample_every": 700}

    def __init__(self, config: PixelCNNConfig, spec: DataSpec) -> None:
        config = config.sized(spec)
        super().__init__(config, spec)
        c, width = self.colours, config.channels
        self.first = MaskedConv2d(c, width, config.first_kernel_size, mask_type="A", groups=c)
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                [
                    MaskedConv2d(width, width // 2, 1, mask_type="B", groups=c),
                    MaskedConv2d(width // 2, width // 2, config.kernel_size, mask_type="B", groups=c, dilation=config.dilations[index % len(config.dilations)]),
                    MaskedConv2d(width // 2, width, 1, mask_type="B", groups=c),
                ]
            )
            for index in range(config.blocks)
        )
        self.class_bias = nn.ModuleList(nn.Linear(self.cond_dim, width // 2, bias=False) for _ in range(config.blocks)) if self.cond_dim else None
        self.first_class_bias = nn.Linear(self.cond_dim, width, bias=False) if self.cond_dim else None
        self.dropout = nn.Dropout(config.dropout)
        self._build_head(width)

    def trunk(self, x: Tensor, cond: Tensor | None) -> Tensor:
        h = self.first(x)  # (B, C, h, W) -> (B, 2h, h, W)
        if cond is not None:
            h = h + self.first_class_bias(cond)[:, :, None, None]
        for index, (reduce, spatial, expand) in enumerate(self.blocks):
            r = reduce(F.relu(h))
            if cond is not None:
                r = r + self.class_bias[index](cond)[:, :, None, None]
            h = h + expand(self.dropout(F.relu(spatial(F.relu(r)))))
        return h


@register("gated-pixelcnn", GatedPixelCNNConfig, family="autoregressive", summary="Gated PixelCNN: two stacks, no blind spot, labels in every gate with class_conditional=true")
class GatedPixelCNN(_PixelCNNBase):
    """Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders"):
    a first layer with a type-A horizontal stack (first_kernel_size), then `blocks` gated layers
    (kernel_size) of `genlab.nn.masked.GatedPixelCNNLayer`, whose vertical stack removes the blind spot;
    class labels enter every gate as y^T V (their eq. 4). The head reads the horizontal stack.

    >>> import torch
    >>> from genlab.data import DataSpec
    >>> spec = DataSpec("toy", kind="image", shape=(1, 4, 4), levels=4)
    >>> model = GatedPixelCNN(GatedPixelCNNConfig(channels=8, blocks=1, head_channels=8), spec)
    >>> model.sample(2, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 4, 4])
    """

    config: GatedPixelCNNConfig
    train_defaults = {"max_steps": 2000, "lr": 1e-3, "batch_size": 64, "ema_decay": 0.99}  # see PixelCNN

    def __init__(self, config: GatedPixelCNNConfig, spec: DataSpec) -> None:
        config = config.sized(spec)
        super().__init__(config, spec)
        c, width = self.colours, config.channels
        self.layers = nn.ModuleList(
            [GatedPixelCNNLayer(c, width, config.first_kernel_size, first=True, groups=c, cond_dim=self.cond_dim)]
            + [
                GatedPixelCNNLayer(width, width, config.kernel_size, first=False, groups=c, cond_dim=self.cond_dim, dropout=config.dropout)
                for _ in range(config.blocks)
            ]
        )
        self._build_head(width)

    def trunk(self, x: Tensor, cond: Tensor | None) -> Tensor:
        v, h = x, x  # (B, C, h, W): both stacks start from the image
        for layer in self.layers:
            v, h = layer(v, h, cond)  # (B, channels, h, W) each
        return h
