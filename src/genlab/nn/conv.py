"""Convolutional encoder and decoder for small images of any (C, H, W).

Both follow one plan of resolutions (`resolution_plan`): the encoder halves the sides with
stride-2 convolutions while half a side is still >= 4 (8 -> 4; 28 -> 14 -> 7; 32 -> 16 -> 8 -> 4),
and the decoder walks the same plan back up to the exact input size, odd sides included
(7 -> 13 needs a different upsampling than 7 -> 14). Forward passes have no data-dependent
Python control flow, use GroupNorm (independent of the batch), and work under channels_last,
bf16 autocast and torch.compile.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.nn.activations import get_activation

CONV_NORMS = ("group", "none")
UPSAMPLE_MODES = ("nearest", "transpose")


def downsample_plan(side: int, min_side: int = 4) -> list[int]:
    """Sides of one axis at each level: [side, ceil(side/2), ...] while side // 2 >= min_side.

    ceil because a 3x3 convolution with stride 2 and padding 1 maps n to ceil(n / 2).

    >>> downsample_plan(8), downsample_plan(28), downsample_plan(32), downsample_plan(13)
    ([8, 4], [28, 14, 7], [32, 16, 8, 4], [13, 7])
    """
    if side < 1:
        raise ConfigError(f"image side {side} must be >= 1")
    sides = [side]
    while sides[-1] // 2 >= min_side:
        sides.append((sides[-1] + 1) // 2)
    return sides


def resolution_plan(height: int, width: int, min_side: int = 4) -> list[tuple[int, int]]:
    """(H, W) at each level, from full resolution down; an axis that has stopped shrinking stays put.

    >>> resolution_plan(28, 8)
    [(28, 8), (14, 4), (7, 4)]
    """
    hs, ws = downsample_plan(height, min_side), downsample_plan(width, min_side)
    levels = max(len(hs), len(ws))
    hs += [hs[-1]] * (levels - len(hs))
    ws += [ws[-1]] * (levels - len(ws))
    return list(zip(hs, ws))


def level_widths(channels: Sequence[int], levels: int) -> list[int]:
    """Channel width at each level, full resolution first: channels[l], repeating the last one
    when there are more levels than widths (widths beyond the last level are unused)."""
    if len(channels) == 0 or any(c <= 0 for c in channels):
        raise ConfigError(f"channels={tuple(channels)!r} must be a non-empty list of positive widths")
    return [channels[min(level, len(channels) - 1)] for level in range(levels)]


def conv_norm(channels: int, norm: str = "group", max_groups: int = 8) -> nn.Module:
    """GroupNorm with gcd(channels, max_groups) groups, or Identity for norm="none"."""
    if norm not in CONV_NORMS:
        raise ConfigError(f"conv norm={norm!r} is unknown; choose one of {', '.join(map(repr, CONV_NORMS))}")
    if norm == "none":
        return nn.Identity()
    return nn.GroupNorm(math.gcd(channels, max_groups), channels)


class ResidualBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016): skip(x) + conv(act(norm(conv(act(norm(x)))))).
    (B, C, H, W) -> (B, C_out, H, W); with the defaults C_out = C and skip is the identity.

    The keyword options make it the DDPM block (Ho et al. 2020, appendix B); their defaults leave
    the plain block unchanged (same modules, same state-dict keys, same numbers):
    out_channels: another output width; skip(x) is then a 1x1 convolution.
    embedding_dim: add Linear(act(e)) per channel after the first convolution, for a conditioning
        vector e (B, embedding_dim) passed to forward (the time embedding); None: no embedding.
    dropout: dropout before the second convolution.
    max_groups: GroupNorm uses gcd(width, max_groups) groups (DDPM: 32).
    zero_init_last: start the second convolution at zero, so the block starts as skip(x).

    >>> import torch
    >>> block = ResidualBlock(8, out_channels=16, embedding_dim=4, zero_init_last=True)
    >>> block(torch.randn(2, 8, 5, 5), torch.randn(2, 4)).shape
    torch.Size([2, 16, 5, 5])
    """

    def __init__(
        self,
        channels: int,
        *,
        activation: str = "silu",
        norm: str = "group",
        out_channels: int | None = None,
        embedding_dim: int | None = None,
        dropout: float = 0.0,
        max_groups: int = 8,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        out_channels = channels if out_channels is None else out_channels
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"residual block dropout={dropout!r} must lie in [0, 1)")
        self.body = nn.Sequential(
            conv_norm(channels, norm, max_groups),
            get_activation(activation),
            nn.Conv2d(channels, out_channels, 3, padding=1),
            conv_norm(out_channels, norm, max_groups),
            get_activation(activation),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        if zero_init_last:
            nn.init.zeros_(self.body[-1].weight)
            nn.init.zeros_(self.body[-1].bias)
        self.skip = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        self.embedding_proj = None
        if embedding_dim is not None:
            self.embedding_proj = nn.Sequential(get_activation(activation), nn.Linear(embedding_dim, out_channels))
        self.dropout = dropout

    def forward(self, x: Tensor, embedding: Tensor | None = None) -> Tensor:
        if self.embedding_proj is None and self.dropout == 0.0:  # the plain block
            return self.skip(x) + self.body(x)
        # unpacked, not sliced: body[:3] would build a new nn.Sequential at every call, Python time that
        # adds up over a UNet's blocks and slows torch.compile's tracing
        norm1, act1, conv1, norm2, act2, conv2 = self.body
        h = conv1(act1(norm1(x)))  # (B, C, H, W) -> (B, C_out, H, W)
        if self.embedding_proj is not None:
            if embedding is None:
                raise ValueError("this ResidualBlock was built with embedding_dim; pass forward(x, embedding)")
            h = h + self.embedding_proj(embedding)[:, :, None, None]  # (B, E) -> (B, C_out, 1, 1)
        h = F.dropout(act2(norm2(h)), self.dropout, self.training)
        return self.skip(x) + conv2(h)


class Upsample(nn.Module):
    """(B, C_in, h, w) -> (B, C_out, H, W) for an exact target size (H, W) with H in {h, 2h - 1, 2h}.

    mode="nearest": nearest-neighbour resize then a 3x3 convolution (no checkerboard artefacts);
    mode="transpose": a 3x3 transposed convolution, stride 2 on the axes that grow, with the
    output padding that hits the target side (2h - 1 + output_padding).
    """

    def __init__(
        self, in_channels: int, out_channels: int, in_size: tuple[int, int], out_size: tuple[int, int], *, mode: str = "nearest"
    ) -> None:
        super().__init__()
        if mode not in UPSAMPLE_MODES:
            raise ConfigError(f"upsample={mode!r} is unknown; choose one of {', '.join(map(repr, UPSAMPLE_MODES))}")
        self.mode = mode
        self.out_size = tuple(out_size)
        if mode == "nearest":
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        else:
            stride = tuple(1 if o == i else 2 for i, o in zip(in_size, out_size))
            output_padding = tuple(0 if s == 1 else o - (2 * i - 1) for i, o, s in zip(in_size, out_size, stride))
            self.conv = nn.ConvTranspose2d(in_channels, out_channels, 3, stride=stride, padding=1, output_padding=output_padding)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "nearest":  # fixed at construction: no data-dependent branching
            x = F.interpolate(x, size=self.out_size, mode="nearest")
        return self.conv(x)


class ConvEncoder(nn.Module):
    """Image (B, C, H, W) -> vector (B, out_dim).

    stem 3x3 conv -> per level: `blocks_per_level` residual blocks (none: an activation), then a
    stride-2 3x3 conv to the next level's width (sides follow `resolution_plan`) -> norm, act, flatten, linear.
    channels: widths from full resolution down; see `level_widths`.

    >>> import torch
    >>> ConvEncoder((1, 28, 28), 10, channels=(8, 16))(torch.randn(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_dim: int,
        *,
        channels: Sequence[int] = (32, 64),
        blocks_per_level: int = 1,
        activation: str = "silu",
        norm: str = "group",
        min_side: int = 4,
    ) -> None:
        super().__init__()
        in_channels, height, width = _image_shape(in_shape)
        self.in_shape = (in_channels, height, width)
        self.plan = resolution_plan(height, width, min_side)
        widths = level_widths(channels, len(self.plan))
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        for level, (size, c) in enumerate(zip(self.plan, widths)):
            layers += level_body(c, blocks_per_level, activation, norm)
            if level + 1 < len(self.plan):
                next_size = self.plan[level + 1]
                stride = tuple(1 if n == s else 2 for s, n in zip(size, next_size))
                layers.append(nn.Conv2d(c, widths[level + 1], 3, stride=stride, padding=1))
        last_h, last_w = self.plan[-1]
        layers += [conv_norm(widths[-1], norm), get_activation(activation), nn.Flatten(1)]
        layers.append(nn.Linear(widths[-1] * last_h * last_w, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, C, H, W) -> (B, out_dim)


class ConvDecoder(nn.Module):
    """Vector (B, in_dim) -> image (B, C, H, W), the mirror of ConvEncoder.

    linear to the smallest level (B, width, h, w) -> per level: residual blocks, then `Upsample`
    to the next larger side of `resolution_plan(H, W)` -> norm, act, 3x3 conv to C channels.
    Outputs are unconstrained (logits, means); the caller gives them meaning.
    channels: widths from the smallest level up to full resolution (the encoder's reversed).

    >>> import torch
    >>> ConvDecoder(10, (3, 7, 13), channels=(16, 8))(torch.randn(2, 10)).shape
    torch.Size([2, 3, 7, 13])
    """

    def __init__(
        self,
        in_dim: int,
        out_shape: Sequence[int],
        *,
        channels: Sequence[int] = (64, 32),
        blocks_per_level: int = 1,
        activation: str = "silu",
        norm: str = "group",
        upsample: str = "nearest",
        min_side: int = 4,
    ) -> None:
        super().__init__()
        out_channels, height, width = _image_shape(out_shape)
        self.out_shape = (out_channels, height, width)
        self.plan = resolution_plan(height, width, min_side)[::-1]  # smallest first
        # widths are given smallest level first; level_widths counts from full resolution
        widths = level_widths(tuple(channels)[::-1], len(self.plan))[::-1]
        first_h, first_w = self.plan[0]
        layers: list[nn.Module] = [nn.Linear(in_dim, widths[0] * first_h * first_w), nn.Unflatten(1, (widths[0], first_h, first_w))]
        for level, (size, c) in enumerate(zip(self.plan, widths)):
            layers += level_body(c, blocks_per_level, activation, norm)
            if level + 1 < len(self.plan):
                layers.append(Upsample(c, widths[level + 1], size, self.plan[level + 1], mode=upsample))
        layers += [conv_norm(widths[-1], norm), get_activation(activation), nn.Conv2d(widths[-1], out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)  # (B, in_dim) -> (B, C, H, W)


def level_body(channels: int, blocks: int, activation: str = "silu", norm: str = "group") -> list[nn.Module]:
    """What a level of a conv encoder or decoder runs at its resolution: `blocks` residual blocks, or
    with none a bare activation, so that the convolutions between levels do not compose to one
    linear map."""
    if blocks == 0:
        return [get_activation(activation)]
    return [ResidualBlock(channels, activation=activation, norm=norm) for _ in range(blocks)]


def _image_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ConfigError(f"convolutional networks need an image shape (C, H, W); got {tuple(shape)}")
    c, h, w = (int(s) for s in shape)
    return c, h, w
