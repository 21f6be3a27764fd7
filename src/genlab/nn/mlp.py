"""The multilayer perceptron every family uses for vectors, tables and small conditioners."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.nn.activations import get_activation

MLP_NORMS = ("none", "layer")


class MLP(nn.Module):
    """Linear -> [LayerNorm] -> activation -> [Dropout], once per hidden width, then a last Linear.

    Acts on the last dimension: (..., in_dim) -> (..., out_dim). `hidden=()` makes it one Linear map.
    zero_init_last: start the last layer at zero, so the network first outputs 0 (a coupling
        layer then starts as the identity, a residual branch as a no-op).

    >>> import torch
    >>> MLP(3, 2, hidden=(16, 16))(torch.randn(5, 3)).shape
    torch.Size([5, 2])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden: Sequence[int] = (256, 256),
        activation: str = "silu",
        norm: str = "none",
        dropout: float = 0.0,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        if norm not in MLP_NORMS:
            raise ConfigError(f"MLP norm={norm!r} is unknown; choose one of {', '.join(map(repr, MLP_NORMS))}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"MLP dropout={dropout!r} must lie in [0, 1)")
        self.in_dim, self.out_dim = in_dim, out_dim
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if norm == "layer":
                layers.append(nn.LayerNorm(h))
            layers.append(get_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        last = nn.Linear(width, out_dim)
        if zero_init_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (..., in_dim) -> (..., out_dim)
