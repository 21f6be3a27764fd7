"""The denoising network for vectors, tables and 2D toy densities: an MLP told the noise level."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.nn.embeddings import ClassEmbedding, NoiseLevelEmbedding


class TimeConditionedMLP(nn.Module):
    """(x_t (B, dim), noise level (B,), y (B,) or None) -> (B, out_dim) (out_dim defaults to dim).

    e = NoiseLevelEmbedding(noise_level) [+ ClassEmbedding(y)], of width embedding_dim; then per
    hidden width n_l:  h_l = SiLU(W_l h_{l-1} + b_l + U_l e)  (the embedding added in every layer,
    as DDPM adds it in every residual block), with h_0 = x; the output is a Linear map of the last h.
    num_classes: condition on labels too (with the classifier-free "no label" token).
    dropout: dropout after every hidden layer's activation (0: none).

    >>> import torch
    >>> net = TimeConditionedMLP(dim=2, hidden=(64, 64))
    >>> net(torch.randn(5, 2), torch.rand(5) * 1000).shape
    torch.Size([5, 2])
    """

    def __init__(
        self,
        *,
        dim: int,
        hidden: Sequence[int] = (256, 256, 256),
        num_classes: int | None = None,
        embedding_dim: int = 128,
        out_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ConfigError(f"TimeConditionedMLP dim={dim} must be >= 1")
        if len(hidden) == 0 or any(h < 1 for h in hidden):
            raise ConfigError(f"TimeConditionedMLP hidden={tuple(hidden)!r} must be a non-empty list of positive widths, e.g. (256, 256)")
        self.dim = dim
        self.num_classes = num_classes
        self.noise_embedding = NoiseLevelEmbedding(embedding_dim, hidden=embedding_dim)
        self.class_embedding = ClassEmbedding(num_classes, embedding_dim) if num_classes is not None else None
        widths = [dim, *hidden]
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.embedding_projs = nn.ModuleList([nn.Linear(embedding_dim, b) for b in hidden])
        self.activation = nn.SiLU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out = nn.Linear(widths[-1], dim if out_dim is None else out_dim)

    def forward(self, x: Tensor, noise_level: Tensor, y: Tensor | None = None) -> Tensor:
        e = self.noise_embedding(noise_level)  # (B,) -> (B, E)
        if self.class_embedding is not None:
            e = e + self.class_embedding(y, batch_size=x.shape[0])
        elif y is not None:
            raise ConfigError("labels y were passed to a TimeConditionedMLP built with num_classes=None; build it with num_classes=K")
        h = x
        for layer, embedding_proj in zip(self.layers, self.embedding_projs):
            h = self.dropout(self.activation(layer(h) + embedding_proj(e)))  # (B, n_{l-1}) -> (B, n_l)
        return self.out(h)  # (B, n_L) -> (B, out_dim)
