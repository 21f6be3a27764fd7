"""Activation functions by name, so configs can choose them with a word (`activation="silu"`)."""

from __future__ import annotations

from typing import Callable

from torch import nn

from genlab.errors import ConfigError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
}


def get_activation(name: str) -> nn.Module:
    """A new activation module for `name` (one of ACTIVATIONS), e.g. get_activation("silu") -> nn.SiLU()."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(f"activation={name!r} is unknown; choose one of {', '.join(map(repr, ACTIVATIONS))}") from None
