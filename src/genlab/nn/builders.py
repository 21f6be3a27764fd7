"""Pick the network for the data: convolutions for images, an MLP for vectors and tables.

Every family builds its encoders and decoders here, so a config's `net="auto" | "mlp" | "conv"`
means the same thing everywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from torch import nn

from genlab.config import Config
from genlab.data.dataset import DataSpec
from genlab.errors import ConfigError
from genlab.nn.conv import UPSAMPLE_MODES, ConvDecoder, ConvEncoder
from genlab.nn.mlp import MLP
from genlab.nn.presets import SIZE_PRESETS, size_config

NETS = ("auto", "mlp", "conv")

# The conv encoder/decoder of each size preset (see genlab.nn.presets). "cpu" downsamples at once
# from a narrow full-resolution level and has no residual blocks, so a step's cost is dominated by
# the small levels; "paper" has a residual block per level at twice the width. The MLPs of small
# images are the same under both, and take the "paper" values of the unused conv fields.
CONV_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"channels": (16, 32, 64), "blocks_per_level": 0, "upsample": "transpose"},
    "paper": {"channels": (32, 64), "blocks_per_level": 1, "upsample": "nearest"},
}


CONV_MIN_SIDE = 16


def is_large_image(spec: DataSpec) -> bool:
    """Whether `spec` is an image (C, H, W) with both sides >= CONV_MIN_SIDE: the data that the size
    presets (`genlab.nn.presets`) give networks of their own."""
    return spec.kind == "image" and len(spec.shape) == 3 and min(spec.shape[1:]) >= CONV_MIN_SIDE


def resolve_net(spec: DataSpec, net: str = "auto") -> str:
    """"mlp" or "conv" for `spec`: "auto" picks "conv" for images of side >= CONV_MIN_SIDE, else "mlp".

    Below 16 pixels (scikit-learn's 8x8 digits) a convolution sees almost the whole image anyway and
    costs ~15x an MLP of similar size on a CPU, so "auto" takes the MLP there.
    """
    if net not in NETS:
        raise ConfigError(f"net={net!r} is unknown; choose one of {', '.join(map(repr, NETS))}")
    if net == "auto":
        return "conv" if is_large_image(spec) else "mlp"
    if net == "conv" and (spec.kind != "image" or len(spec.shape) != 3):
        raise ConfigError(
            f"net='conv' needs image data of shape (C, H, W); data {spec.name!r} is kind={spec.kind!r} "
            f"with shape {spec.shape}; use net='mlp' or net='auto'"
        )
    return net


@dataclasses.dataclass
class ConvNetConfig(Config):
    """The fields of a config whose networks `build_encoder` and `build_decoder` make.

    preset: "auto", "cpu" or "paper": the size of the conv networks (`genlab.nn.presets`); "cpu":
        widths (16, 32, 64), no residual blocks, transposed-convolution upsampling; "paper": widths
        (32, 64), a residual block per level, nearest-neighbour upsampling.
    channels: conv widths of the encoder from full resolution down; the decoder uses them reversed
        (None: the preset's).
    blocks_per_level: residual blocks at each resolution (None: the preset's).
    upsample: the decoder's upsampling, "nearest" (resize then conv) or "transpose" (None: the preset's).
    """

    preset: str = "auto"
    channels: tuple[int, ...] | None = None
    blocks_per_level: int | None = None
    upsample: str | None = None

    def validate(self) -> None:
        self._choice("preset", SIZE_PRESETS)
        if self.channels is not None:
            widths = tuple(self.channels)
            if not widths or any(not isinstance(w, int) or w <= 0 for w in widths):
                raise ConfigError(f"{type(self).__name__}.channels={widths!r} must be positive integer widths, e.g. (32, 64)")
            self.channels = widths
        if self.blocks_per_level is not None:
            self._positive("blocks_per_level", allow_zero=True)
        if self.upsample is not None:
            self._choice("upsample", UPSAMPLE_MODES)

    def sized(self, spec: DataSpec) -> "ConvNetConfig":
        """This config with the preset resolved and the fields it sizes filled in for `spec`."""
        return size_config(self, CONV_PRESETS, sized_data=resolve_net(spec, getattr(self, "net", "auto")) == "conv")

    def conv_options(self) -> dict[str, Any]:
        """build_encoder's conv keywords of a sized config."""
        return {"channels": self.channels, "blocks_per_level": self.blocks_per_level}

    def decoder_conv_options(self) -> dict[str, Any]:
        """build_decoder's conv keywords of a sized config: the encoder's widths reversed."""
        return {"channels": self.channels[::-1], "blocks_per_level": self.blocks_per_level, "upsample": self.upsample}


def build_encoder(
    spec: DataSpec,
    out_dim: int,
    *,
    net: str = "auto",
    hidden: Sequence[int] = (256, 256),
    channels: Sequence[int] = (32, 64),
    blocks_per_level: int = 1,
    activation: str = "silu",
) -> nn.Module:
    """A network (B, *spec.shape) -> (B, out_dim).

    conv: ConvEncoder with `channels` (full resolution first) and `blocks_per_level` residual
    blocks at each resolution; mlp: flatten then MLP with `hidden`.
    """
    if resolve_net(spec, net) == "conv":
        return ConvEncoder(spec.shape, out_dim, channels=channels, blocks_per_level=blocks_per_level, activation=activation)
    return nn.Sequential(nn.Flatten(1), MLP(spec.dim, out_dim, hidden=hidden, activation=activation))


def build_decoder(
    in_dim: int,
    spec: DataSpec,
    *,
    net: str = "auto",
    hidden: Sequence[int] = (256, 256),
    channels: Sequence[int] = (64, 32),
    blocks_per_level: int = 1,
    upsample: str = "nearest",
    activation: str = "silu",
) -> nn.Module:
    """A network (B, in_dim) -> (B, *spec.shape) of unconstrained values (logits or means).

    conv: ConvDecoder with `channels` (smallest level first), `blocks_per_level` and `upsample`;
    mlp: MLP with `hidden`, then reshape. To mirror an encoder built with (hidden, channels), pass
    both reversed.
    """
    if resolve_net(spec, net) == "conv":
        return ConvDecoder(in_dim, spec.shape, channels=channels, blocks_per_level=blocks_per_level, upsample=upsample, activation=activation)
    return nn.Sequential(MLP(in_dim, spec.dim, hidden=hidden, activation=activation), nn.Unflatten(1, tuple(spec.shape)))
