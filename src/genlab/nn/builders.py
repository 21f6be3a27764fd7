"""Pick the network for the data: convolutions for images, an MLP for vectors and tables.

Every family builds its encoders and decoders here, so a config's `net="auto" | "mlp" | "conv"`
means the same thing everywhere.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from genlab.data.dataset import DataSpec
from genlab.errors import ConfigError
from genlab.nn.conv import ConvDecoder, ConvEncoder
from genlab.nn.mlp import MLP

NETS = ("auto", "mlp", "conv")


CONV_MIN_SIDE = 16


def resolve_net(spec: DataSpec, net: str = "auto") -> str:
    """"mlp" or "conv" for `spec`: "auto" picks "conv" for images of side >= CONV_MIN_SIDE, else "mlp".

    Below 16 pixels (scikit-learn's 8x8 digits) a convolution sees almost the whole image anyway and
    costs ~15x an MLP of similar size on a CPU, so "auto" takes the MLP there.
    """
    if net not in NETS:
        raise ConfigError(f"net={net!r} is unknown; choose one of {', '.join(map(repr, NETS))}")
    if net == "auto":
        is_image = spec.kind == "image" and len(spec.shape) == 3
        return "conv" if is_image and min(spec.shape[1:]) >= CONV_MIN_SIDE else "mlp"
    if net == "conv" and (spec.kind != "image" or len(spec.shape) != 3):
        raise ConfigError(
            f"net='conv' needs image data of shape (C, H, W); data {spec.name!r} is kind={spec.kind!r} "
            f"with shape {spec.shape}; use net='mlp' or net='auto'"
        )
    return net


def build_encoder(
    spec: DataSpec,
    out_dim: int,
    *,
    net: str = "auto",
    hidden: Sequence[int] = (256, 256),
    channels: Sequence[int] = (32, 64),
    activation: str = "silu",
) -> nn.Module:
    """A network (B, *spec.shape) -> (B, out_dim).

    conv: ConvEncoder with `channels` (full resolution first); mlp: flatten then MLP with `hidden`.
    """
    if resolve_net(spec, net) == "conv":
        return ConvEncoder(spec.shape, out_dim, channels=channels, activation=activation)
    return nn.Sequential(nn.Flatten(1), MLP(spec.dim, out_dim, hidden=hidden, activation=activation))


def build_decoder(
    in_dim: int,
    spec: DataSpec,
    *,
    net: str = "auto",
    hidden: Sequence[int] = (256, 256),
    channels: Sequence[int] = (64, 32),
    activation: str = "silu",
) -> nn.Module:
    """A network (B, in_dim) -> (B, *spec.shape) of unconstrained values (logits or means).

    conv: ConvDecoder with `channels` (smallest level first); mlp: MLP with `hidden`, then reshape.
    To mirror an encoder built with (hidden, channels), pass both reversed.
    """
    if resolve_net(spec, net) == "conv":
        return ConvDecoder(in_dim, spec.shape, channels=channels, activation=activation)
    return nn.Sequential(MLP(in_dim, spec.dim, hidden=hidden, activation=activation), nn.Unflatten(1, tuple(spec.shape)))
