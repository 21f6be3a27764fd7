"""The DDPM UNet (Ho et al. 2020, appendix B), sized by config from a CPU toy to DDPM-CIFAR10.

Layout, for L = len(channel_mults) levels of width base_channels * mult:
    stem 3x3 conv
    down:   per level, num_res_blocks x [ResidualBlock (+ SpatialSelfAttention)], then a stride-2
            3x3 conv (not after the last level); every output is kept as a skip connection
    middle: ResidualBlock, SpatialSelfAttention, ResidualBlock
    up:     per level from the smallest, (num_res_blocks + 1) x [concat(h, skip) -> ResidualBlock
            (+ SpatialSelfAttention)], then nearest upsampling + 3x3 conv (not after level 0)
    out:    GroupNorm, SiLU, 3x3 conv (zero-initialised, so the network first outputs 0)
The noise level enters through `NoiseLevelEmbedding` (sinusoid -> MLP, width 4 * base_channels),
plus a `ClassEmbedding` when num_classes is set, and is added inside every residual block.
GroupNorm has DDPM's 32 groups, fewer at narrow widths so that each holds >= 4 channels (`norm_groups`).

Any image size works: a stride-2 conv maps a side n to ceil(n / 2) (28 -> 14 -> 7 -> 4), and
`Upsample` walks the recorded sides back up exactly (4 -> 7 -> 14 -> 28).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.nn.attention import SpatialSelfAttention
from genlab.nn.conv import ResidualBlock, Upsample, conv_norm
from genlab.nn.embeddings import ClassEmbedding, ConditionedNetwork, NoiseLevelEmbedding

GROUPS = 32  # GroupNorm groups of DDPM
MIN_GROUP_WIDTH = 4  # channels per group, at least (DDPM: 128 / 32)


def norm_groups(width: int) -> int:
    """The most GroupNorm groups for `width`: min(32, width / 4), as gcd(width, .) groups by `conv_norm`.

    DDPM's 32 groups at width 128 hold 4 channels each. At narrow widths gcd(width, 32) groups would
    hold one channel each (instance norm), and a norm that centres each channel on its own removes
    the per-channel time embedding added just before it: the network would ignore the noise level.
    """
    return max(1, min(GROUPS, width // MIN_GROUP_WIDTH))

# Architecture presets for UNet.from_preset; in/out channels come from the data.
UNET_PRESETS: dict[str, dict[str, Any]] = {
    # 8x8 digits in tests and smoke runs
    "tiny": dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,), dropout=0.0, image_size=8),
    # 8x8 digits: sized to train in minutes on a laptop CPU (the README gives its size and time)
    "small": dict(base_channels=24, channel_mults=(1, 2, 2), num_res_blocks=1, attention_resolutions=(4,), dropout=0.1, image_size=8),
    # 28x28 MNIST / Fashion-MNIST
    "mnist": dict(base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=2, attention_resolutions=(7,), dropout=0.1, image_size=28),
    # 16x16 to 64x64 on a CPU: levels from half resolution (stem_stride 2), one block per level,
    # attention only in the middle
    "cpu": dict(
        base_channels=24, channel_mults=(1, 2, 2), num_res_blocks=1, attention_resolutions=(), dropout=0.1, image_size=28, stem_stride=2
    ),
    # Ho et al. 2020, CIFAR-10
    "ddpm-cifar10": dict(
        base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2, attention_resolutions=(16,), dropout=0.1, image_size=32
    ),
}


class _Stage(nn.Module):
    """A time-conditioned ResidualBlock, then SpatialSelfAttention where the level asks for it."""

    def __init__(self, in_channels: int, out_channels: int, *, embedding_dim: int, dropout: float, attention: bool, num_heads: int) -> None:
        super().__init__()
        self.block = ResidualBlock(
            in_channels,
            out_channels=out_channels,
            embedding_dim=embedding_dim,
            dropout=dropout,
            max_groups=norm_groups(min(in_channels, out_channels)),  # one max_groups for both norms
            zero_init_last=True,
        )
        self.attention: nn.Module = nn.Identity()
        if attention:
            self.attention = SpatialSelfAttention(out_channels, num_heads=num_heads, groups=norm_groups(out_channels))

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        return self.attention(self.block(x, embedding))


class UNet(ConditionedNetwork):
    """Denoising UNet for images (Ho et al. 2020): (x_t, noise level, label) -> (B, out_channels, H, W).

    Keyword-only. base_channels * channel_mults[l] is the width at level l (level 0 = full
    resolution; each further level halves the sides); num_res_blocks residual blocks per level
    on the way down (one more on the way up); attention_resolutions: the sides (the larger one
    for non-square images) of the levels that get self-attention, which must be sides of
    this image's levels; the middle always has it. image_size: int for square images or (H, W).
    num_classes: add a ClassEmbedding (with the classifier-free "no label" token) to the time
    embedding; None for an unconditional network. stem_stride: 2 starts the levels at half the
    image's sides (a stride-2 stem, and a transposed convolution back to full size before the
    output conv), which makes a step about 4x cheaper; 1 is DDPM's. See UNET_PRESETS and `from_preset`.

    forward(x (B, in_channels, H, W), noise_level (B,) float, y (B,) long or None)
        -> (B, out_channels, H, W).

    >>> import torch
    >>> net = UNet.from_preset("tiny", in_channels=1, out_channels=1, num_classes=10)
    >>> out = net(torch.randn(2, 1, 8, 8), torch.tensor([10.0, 500.0]), torch.tensor([3, 10]))
    >>> out.shape, bool((out == 0).all())  # the output conv starts at zero
    (torch.Size([2, 1, 8, 8]), True)
    """

    presets = UNET_PRESETS

    @classmethod
    def from_preset(cls, name: str, **fields: Any) -> "UNet":
        """The preset `name` for the image_size in `fields`: a preset's attention side that is not a
        level of this image moves to the level of the same index (the "mnist" preset's attention at
        side 7 of 28 goes to side 8 of 16); sides that are levels of this image stay."""
        if name in cls.presets and "image_size" in fields and "attention_resolutions" not in fields:
            preset = cls.presets[name]
            stride = fields.get("stem_stride", preset.get("stem_stride", 1))
            own, new = (_level_sides(size, len(preset["channel_mults"]), stride) for size in (preset["image_size"], fields["image_size"]))
            fields["attention_resolutions"] = tuple(r if r in new else new[own.index(r)] for r in preset["attention_resolutions"])
        return super().from_preset(name, **fields)

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        base_channels: int = 128,
        channel_mults: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        num_classes: int | None = None,
        image_size: int | Sequence[int] = 32,
        num_heads: int = 1,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ConfigError(f"UNet in_channels={in_channels} and out_channels={out_channels} must be >= 1")
        if base_channels < 1:
            raise ConfigError(f"UNet base_channels={base_channels} must be >= 1")
        if len(channel_mults) == 0 or any(m < 1 for m in channel_mults):
            raise ConfigError(f"UNet channel_mults={tuple(channel_mults)!r} must be a non-empty list of positive integers, e.g. (1, 2, 2)")
        if num_res_blocks < 1:
            raise ConfigError(f"UNet num_res_blocks={num_res_blocks} must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"UNet dropout={dropout!r} must lie in [0, 1)")
        if stem_stride not in (1, 2):
            raise ConfigError(f"UNet stem_stride={stem_stride!r} must be 1 (levels from full resolution) or 2 (from half)")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.image_size = _image_size(image_size)
        first = self.image_size if stem_stride == 1 else tuple((side + 1) // 2 for side in self.image_size)
        self.sizes = _level_sizes(first, len(channel_mults))  # the levels' (H, W), full resolution (or half) first
        resolutions = [max(size) for size in self.sizes]
        unknown = sorted(set(attention_resolutions) - set(resolutions))
        if unknown:
            raise ConfigError(
                f"UNet attention_resolutions={tuple(attention_resolutions)!r}: {unknown} is not a level of image_size="
                f"{self.image_size} with {len(channel_mults)} channel_mults; the levels' sides are {resolutions}"
            )
        widths = [base_channels * m for m in channel_mults]
        embedding_dim = 4 * base_channels
        self.noise_embedding = NoiseLevelEmbedding(base_channels, hidden=embedding_dim)
        self.class_embedding = ClassEmbedding(num_classes, embedding_dim) if num_classes is not None else None
        self.num_classes = num_classes

        def stage(c_in: int, c_out: int, attention: bool) -> _Stage:
            return _Stage(c_in, c_out, embedding_dim=embedding_dim, dropout=dropout, attention=attention, num_heads=num_heads)

        self.stem = nn.Conv2d(in_channels, base_channels, 3, stride=stem_stride, padding=1)
        self.down = nn.ModuleList()
        skip_widths = [base_channels]
        width = base_channels
        for level, (size, level_width) in enumerate(zip(self.sizes, widths)):
            for _ in range(num_res_blocks):
                self.down.append(stage(width, level_width, max(size) in attention_resolutions))
                width = level_width
                skip_widths.append(width)
            if level + 1 < len(self.sizes):
                stride = tuple(1 if n == s else 2 for s, n in zip(size, self.sizes[level + 1]))
                self.down.append(nn.Conv2d(width, width, 3, stride=stride, padding=1))
                skip_widths.append(width)

        self.middle = nn.ModuleList([stage(width, width, True), stage(width, width, False)])

        self.up = nn.ModuleList()
        for level in reversed(range(len(self.sizes))):
            for _ in range(num_res_blocks + 1):
                self.up.append(stage(width + skip_widths.pop(), widths[level], max(self.sizes[level]) in attention_resolutions))
                width = widths[level]
            if level > 0:
                self.up.append(Upsample(width, width, self.sizes[level], self.sizes[level - 1], mode="nearest"))

        head: list[nn.Module] = [conv_norm(width, max_groups=norm_groups(width)), nn.SiLU()]
        if stem_stride == 2:  # back to full resolution, then the output conv there
            head += [Upsample(width, width, self.sizes[0], self.image_size, mode="transpose"), nn.SiLU()]
        self.out = nn.Sequential(*head, nn.Conv2d(width, out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, noise_level: Tensor, y: Tensor | None = None) -> Tensor:
        if tuple(x.shape[-2:]) != self.image_size:
            raise ConfigError(
                f"UNet built for image_size={self.image_size} got images of size {tuple(x.shape[-2:])}; build it with that image_size"
            )
        embedding = self.embed(noise_level, y)  # (B, E)
        h = self.stem(x)  # (B, C_in, H, W) -> (B, base, H, W)
        skips = [h]
        for layer in self.down:
            h = layer(h, embedding) if isinstance(layer, _Stage) else layer(h)  # a stride-2 conv halves H, W
            skips.append(h)
        for layer in self.middle:
            h = layer(h, embedding)
        for layer in self.up:
            if isinstance(layer, _Stage):
                h = layer(torch.cat([h, skips.pop()], dim=1), embedding)  # (B, C + C_skip, h, w) -> (B, C_level, h, w)
            else:
                h = layer(h)  # Upsample: (B, C, h, w) -> (B, C, ~2h, ~2w), the recorded larger side
        return self.out(h)  # (B, C_0, H, W) -> (B, out_channels, H, W)


def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"UNet image_size={image_size!r} must be a positive int or a pair (H, W)")
    return size


def _level_sides(image_size: int | Sequence[int], levels: int, stem_stride: int = 1) -> list[int]:
    """The larger side of each level of a UNet for `image_size` (`attention_resolutions`' units)."""
    size = _image_size(image_size)
    first = size if stem_stride == 1 else tuple((side + 1) // 2 for side in size)
    return [max(s) for s in _level_sizes(first, levels)]


def _level_sizes(image_size: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    """(H, W) of each level: a stride-2 3x3 conv with padding 1 maps a side n to ceil(n / 2)."""
    sizes = [image_size]
    for _ in range(levels - 1):
        h, w = sizes[-1]
        if max(h, w) == 1:
            raise ConfigError(
                f"UNet image_size={image_size} cannot be halved {levels - 1} times (channel_mults has {levels} levels); "
                f"use at most {len(sizes)} channel_mults"
            )
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes
