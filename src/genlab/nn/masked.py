"""Masked layers for autoregressive models: MADE on vectors, masked and gated convolutions on images.

An autoregressive model factorises p(x) = prod_i p(x_i | x_<i). These layers make one network pass
output every conditional at once, by zeroing the weights that would let output i see an input that
comes at or after i in the chosen ordering.

- `MaskedLinear`, `MADE`: Germain et al. 2015, "MADE: Masked Autoencoder for Distribution Estimation".
- `MaskedConv2d` (types "A" and "B", with R,G,B channel groups), PixelCNN: van den Oord et al. 2016,
  "Pixel Recurrent Neural Networks".
- `GatedPixelCNNLayer` (vertical and horizontal stacks, no blind spot): van den Oord et al. 2016,
  "Conditional Image Generation with PixelCNN Decoders".
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.nn.activations import get_activation

MASK_TYPES = ("A", "B")


# ---------------------------------------------------------------------------------------------
# Vectors: MADE
# ---------------------------------------------------------------------------------------------


class MaskedLinear(nn.Linear):
    """y = (W * M) x + b, with a fixed binary mask M (out_features, in_features), optionally plus an
    unmasked context term V c.

    The mask is a buffer that moves with the module but is not saved (its owner rebuilds it from the
    ordering); `set_mask` replaces it, e.g. when MADE draws a new ordering. x: (..., in_features), context: (..., context_features) -> (..., out_features).
    """

    def __init__(self, in_features: int, out_features: int, *, context_features: int = 0, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        # not saved: the mask is a function of the model's ordering, rebuilt at construction
        self.register_buffer("mask", torch.ones(out_features, in_features), persistent=False)
        self.context = nn.Linear(context_features, out_features, bias=False) if context_features > 0 else None

    def set_mask(self, mask: Tensor) -> None:
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} must equal the weight's {tuple(self.weight.shape)}")
        self.mask.copy_(mask.to(self.mask))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        y = F.linear(x, self.weight * self.mask, self.bias)
        if self.context is not None:
            if context is None:
                raise ValueError("this MaskedLinear was built with context_features > 0; pass context")
            y = y + self.context(context)
        return y


def made_degrees(
    features: int,
    hidden: Sequence[int],
    order: Tensor,
    *,
    context: bool = False,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """The MADE degrees m^l(k) of every layer (Germain et al. 2015, section 4).

    Inputs get m^0(j) = order[j] + 1 in {1..D}. A hidden unit of degree m may see inputs of degree <= m,
    so it carries information about the first m variables of the ordering. Degrees lie in
    {1..D-1} (units of degree D could feed no output); with a context they lie in {0..D-1}, where
    degree-0 units see only the context, so the context reaches the first output non-linearly.

    generator None: degrees cycle through the allowed range (every degree present when a layer is at
    least that wide, so every allowed connection exists). With a generator: each unit's degree is
    drawn uniformly from [min degree of the previous layer, D-1], Germain et al.'s rule, which keeps
    every unit connected (connectivity-agnostic training resamples them).
    Returns [m^0 (D,), m^1 (H1,), ..., m^L (HL,)] as long tensors.
    """
    lowest = 0 if context else 1
    highest = max(features - 1, lowest)
    if features == 1 and not context:
        highest = 1  # nothing may feed the only output; degree-1 units are cut from it by the output mask
    degrees = [order.long() + 1]
    previous_min = lowest
    for width in hidden:
        if generator is None:
            span = highest - lowest + 1
            m = lowest + torch.arange(width) % span
        else:
            low = min(max(previous_min, lowest), highest)
            m = torch.randint(low, highest + 1, (width,), generator=generator)
        degrees.append(m)
        previous_min = int(m.min()) if width > 0 else previous_min
    return degrees


def made_masks(degrees: Sequence[Tensor], outputs_per_feature: int = 1) -> list[Tensor]:
    """Masks from degrees: hidden M[k, k'] = [m^l(k) >= m^{l-1}(k')]; output M[i, k] = [m^0(i) > m^L(k)]
    (strict, so output i never sees x_i). Output unit i*K + r belongs to feature i (K = outputs_per_feature).
    Returns one (out, in) float mask per layer."""
    masks = [(degrees[l][:, None] >= degrees[l - 1][None, :]).float() for l in range(1, len(degrees))]
    output = (degrees[0][:, None] > degrees[-1][None, :]).float()  # (D, H_L)
    masks.append(output.repeat_interleave(outputs_per_feature, dim=0))
    return masks


def _check_order(order: Tensor, features: int) -> Tensor:
    order = torch.as_tensor(order).detach().cpu().long().flatten()
    if order.numel() != features or not torch.equal(order.sort().values, torch.arange(features)):
        raise ConfigError(f"MADE order must be a permutation of 0..{features - 1}; got {order.tolist()}")
    return order


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation (Germain et al. 2015).

    An MLP whose weights are masked so that output i is a function of {x_j : order[j] < order[i]} only
    (and of the context c, which feeds every layer unmasked). With K = outputs_per_feature the outputs
    are K numbers per variable, e.g. the shift and log-scale of an affine MAF layer or the logits of a
    categorical p(x_i | x_<i).

    x: (B, D), context: (B, C) -> (B, D, K).

    Several orderings (Germain et al., "order-agnostic" and "connectivity-agnostic" training):
    `set_mask_index(k)` switches to the k-th of a reproducible family of masks (k = 0: the constructor's
    `order` with cyclic degrees; k >= 1: a random ordering and random degrees drawn from `seed + k`);
    `resample_masks(generator)` draws a fresh ordering and connectivity. A model cycles k during
    training and averages the probabilities of several k at test time (an ensemble of orderings).

    >>> import torch
    >>> made = MADE(3, (16, 16), outputs_per_feature=2)
    >>> made(torch.randn(5, 3)).shape
    torch.Size([5, 3, 2])
    """

    def __init__(
        self,
        features: int,
        hidden: Sequence[int],
        *,
        outputs_per_feature: int = 1,
        context_features: int = 0,
        order: Tensor | None = None,
        activation: str = "relu",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if features < 1 or outputs_per_feature < 1 or context_features < 0:
            raise ConfigError(
                f"MADE needs features >= 1, outputs_per_feature >= 1, context_features >= 0; got "
                f"{features}, {outputs_per_feature}, {context_features}"
            )
        self.features, self.hidden = features, tuple(int(h) for h in hidden)
        self.outputs_per_feature, self.context_features, self.seed = outputs_per_feature, context_features, seed
        widths = (features, *self.hidden)
        self.layers = nn.ModuleList(
            MaskedLinear(widths[l], widths[l + 1], context_features=context_features) for l in range(len(self.hidden))
        )
        self.output_layer = MaskedLinear(widths[-1], features * outputs_per_feature, context_features=context_features)
        self.activation = get_activation(activation)
        # orderings are plain CPU tensors, not buffers: the engine's EMA averages every buffer, and an
        # average of integer orderings is not an ordering
        self.base_order = torch.arange(features) if order is None else _check_order(order, features)
        self.order = self.base_order.clone()
        self.mask_index = 0
        self._apply_degrees(made_degrees(features, self.hidden, self.base_order, context=context_features > 0))

    # -- masks ---------------------------------------------------------------------------
    def _apply_degrees(self, degrees: list[Tensor]) -> None:
        masks = made_masks(degrees, self.outputs_per_feature)
        for layer, mask in zip([*self.layers, self.output_layer], masks):
            layer.set_mask(mask)
        self.order = (degrees[0] - 1).cpu()

    def set_order(self, order: Tensor) -> None:
        """Use `order` (a permutation of 0..D-1) with the default cyclic connectivity."""
        order = _check_order(order.cpu(), self.features)
        self._apply_degrees(made_degrees(self.features, self.hidden, order, context=self.context_features > 0))

    def resample_masks(self, generator: torch.Generator, *, order: bool = True, connectivity: bool = True) -> None:
        """Draw a new ordering (uniform permutation) and/or new hidden degrees from `generator`."""
        new_order = torch.randperm(self.features, generator=generator) if order else self.order
        degrees = made_degrees(
            self.features, self.hidden, new_order, context=self.context_features > 0, generator=generator if connectivity else None
        )
        self._apply_degrees(degrees)

    def set_mask_index(self, index: int, *, order_agnostic: bool = True) -> None:
        """Switch to mask `index` of this MADE's reproducible family (0 = the constructor's masks)."""
        self.mask_index = int(index)
        if index == 0:
            self.set_order(self.base_order)
            return
        generator = torch.Generator().manual_seed(self.seed * 100_003 + int(index))
        if order_agnostic:
            self.resample_masks(generator)
        else:
            self.order = self.base_order.clone()
            self.resample_masks(generator, order=False)

    # -- forward -------------------------------------------------------------------------
    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x (B, D) -> (B, D, outputs_per_feature); output[:, i] depends only on x[:, j] with order[j] < order[i]
        (order: a permutation of 0..D-1, default the identity); context (B, C) feeds every unit (unmasked)."""
        if x.shape[-1] != self.features:
            raise ValueError(f"MADE expects (B, {self.features}) inputs; got {tuple(x.shape)}")
        if (context is None) != (self.context_features == 0):
            raise ValueError(
                f"MADE was built with context_features={self.context_features}; "
                + ("pass context=(B, C)" if context is None else "do not pass a context")
            )
        h = x
        for layer in self.layers:
            h = self.activation(layer(h, context))  # (B, H_l)
        out = self.output_layer(h, context)  # (B, D * K)
        return out.view(*x.shape[:-1], self.features, self.outputs_per_feature)


# ---------------------------------------------------------------------------------------------
# Images: masked convolutions (PixelCNN) and the gated stacks (gated PixelCNN)
# ---------------------------------------------------------------------------------------------


def channel_groups(channels: int, groups: int) -> Tensor:
    """Colour group of each of `channels` feature maps: contiguous blocks, channel c -> c // (channels / groups).

    With groups = 3 the first third of the features belong to R, then G, then B (van den Oord et al. 2016)."""
    if channels % groups != 0:
        raise ConfigError(f"{channels} channels cannot be split into {groups} colour groups; use a multiple of {groups}")
    return torch.arange(channels) // (channels // groups)


def centre_channel_mask(out_channels: int, in_channels: int, groups: int, mask_type: str) -> Tensor:
    """(out, in) mask of the centre tap: type "A" lets output group g see input groups < g (so a pixel's
    R predicts nothing of itself, G sees R, B sees R and G); type "B" also lets it see group g."""
    if mask_type not in MASK_TYPES:
        raise ConfigError(f"mask_type={mask_type!r} is unknown; choose 'A' (excludes the centre) or 'B' (includes it)")
    out_group = channel_groups(out_channels, groups)[:, None]
    in_group = channel_groups(in_channels, groups)[None, :]
    return (in_group < out_group if mask_type == "A" else in_group <= out_group).float()


def check_dilations(owner: str, field: str, dilations: tuple[int, ...] | None) -> None:
    """A config's dilations of masked convolutions (None: a preset fills them): one or more integers >= 1."""
    if dilations is not None and (not dilations or any(not isinstance(d, int) or d < 1 for d in dilations)):
        raise ConfigError(f"{owner}.{field}={dilations} must be one or more integers >= 1, e.g. 1,2,4,8")


class MaskedConv2d(nn.Conv2d):
    """A "same" convolution whose kernel sees only pixels before the centre in raster order
    (rows above, and the same row to the left), plus the centre subject to the colour-group rule
    of `centre_channel_mask` (van den Oord et al. 2016, "Pixel Recurrent Neural Networks", fig. 2).

    (B, in_channels, H, W) -> (B, out_channels, H, W). Type "A" for the first layer (a pixel's own value
    is hidden from its prediction), "B" for later ones. groups = the data's colour channels (1 for grey).
    Output rows 0..i depend on input rows 0..i only, so a caller may crop the image below row i.
    dilation d spaces the taps d pixels apart (the mask is on the taps, so it stays causal): stacked
    with d = 1, 2, 4, ... the receptive field grows exponentially with depth at a constant cost.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, mask_type: str, groups: int = 1, bias: bool = True, dilation: int = 1
    ) -> None:
        if kernel_size % 2 != 1:
            raise ConfigError(f"MaskedConv2d kernel_size={kernel_size} must be odd so the centre is a pixel")
        super().__init__(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation, bias=bias)
        self.mask_type, self.colour_groups = mask_type, groups
        k = kernel_size // 2
        mask = torch.zeros(out_channels, in_channels, kernel_size, kernel_size)
        mask[:, :, :k, :] = 1.0  # rows above
        mask[:, :, k, :k] = 1.0  # same row, to the left
        mask[:, :, k, k] = centre_channel_mask(out_channels, in_channels, groups, mask_type)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding, dilation=self.dilation)


def gated_activation(x: Tensor, groups: int = 1) -> Tensor:
    """y = tanh(a) * sigmoid(b)  (van den Oord et al. 2016, gated PixelCNN, eq. 2).

    x: (B, 2p, H, W) -> (B, p, H, W). Within each colour group's block of channels the first half is
    a and the second half b, so the gate never mixes colour groups."""
    b, c, h, w = x.shape
    x = x.view(b, groups, 2, c // (2 * groups), h, w)
    return (torch.tanh(x[:, :, 0]) * torch.sigmoid(x[:, :, 1])).reshape(b, c // 2, h, w)


def shift_down(x: Tensor) -> Tensor:
    """Move every row one down (row 0 becomes zeros): (B, C, H, W) -> (B, C, H, W)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


class GatedPixelCNNLayer(nn.Module):
    """One layer of the gated PixelCNN's two stacks (van den Oord et al. 2016, "Conditional Image
    Generation with PixelCNN Decoders", fig. 2), without the blind spot of masked 3x3 convolutions.

    Vertical stack: a (k//2 + 1) x k convolution over rows i - k//2 .. i (all columns within k//2),
    so v[i] depends on image rows <= i. Horizontal stack: a 1 x (k//2 + 1) convolution over columns
    j - k//2 .. j of row i (type "A": j - k//2 .. j - 1 in the first layer, and colour groups masked
    at the centre). The vertical features enter the horizontal stack shifted one row down, so h[i, j]
    sees rows < i entirely (including the pixels up and to the right) plus row i left of j:

        v' = W_v * v + V_v c,   h' = W_h * h + W_vh shift_down(v') + V_h c,
        v_out = tanh(v'_a) sigmoid(v'_b),   h_out = h + W_o gate(h')   (residual except the first layer)

    c: a conditioning vector per image (e.g. a one-hot label), (B, cond_dim), added as a bias per channel.
    dropout: on the horizontal stack's residual branch.
    v, h: (B, channels, H, W) (the first layer takes the image, (B, in_channels, H, W), for both).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        kernel_size: int,
        *,
        first: bool,
        groups: int = 1,
        cond_dim: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ConfigError(f"gated PixelCNN kernel_size={kernel_size} must be odd")
        self.dropout = nn.Dropout(dropout)
        self.first, self.groups, self.k = first, groups, kernel_size // 2
        k = self.k
        self.vertical = nn.Conv2d(in_channels, 2 * channels, (k + 1, kernel_size))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        # horizontal: k + 1 taps, the last being the centre pixel
        self.horizontal = nn.Conv2d(in_channels, 2 * channels, (1, k + 1))
        mask = torch.ones(2 * channels, in_channels, 1, k + 1)
        mask[:, :, 0, k] = centre_channel_mask(2 * channels, in_channels, groups, "A" if first else "B")
        self.register_buffer("horizontal_mask", mask, persistent=False)
        self.horizontal_out = MaskedConv2d(channels, channels, 1, mask_type="B", groups=groups)
        self.vertical_cond = nn.Linear(cond_dim, 2 * channels, bias=False) if cond_dim > 0 else None
        self.horizontal_cond = nn.Linear(cond_dim, 2 * channels, bias=False) if cond_dim > 0 else None

    def forward(self, v: Tensor, h: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        k = self.k
        v_pre = self.vertical(F.pad(v, (k, k, k, 0)))  # (B, 2p, H, W): rows i-k..i
        h_pre = F.conv2d(F.pad(h, (k, 0, 0, 0)), self.horizontal.weight * self.horizontal_mask, self.horizontal.bias)
        h_pre = h_pre + self.vertical_to_horizontal(shift_down(v_pre))
        if cond is not None and self.vertical_cond is not None:
            v_pre = v_pre + self.vertical_cond(cond)[:, :, None, None]
            h_pre = h_pre + self.horizontal_cond(cond)[:, :, None, None]
        v_out = gated_activation(v_pre, self.groups)
        h_out = self.horizontal_out(gated_activation(h_pre, self.groups))
        if not self.first:
            h_out = h + self.dropout(h_out)
        return v_out, h_out
