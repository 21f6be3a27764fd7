"""Conditioning vectors for denoising networks: the noise level and the class label.

The noise level enters as a real number per sample, whatever the family calls it: the integer
step t of DDPM (as a float), 1000 * t for continuous time, or c_noise = log(sigma) / 4 for EDM.
A network never knows which; the model that calls it chooses the value.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from genlab.errors import ConfigError


def sinusoidal_embedding(values: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of real numbers (Vaswani et al. 2017, sec. 3.5; Ho et al. 2020, appendix B).

    With half = dim // 2 and frequencies f_i = max_period^(-i / half), i = 0 .. half - 1:
        e(v) = [sin(v f_0), ..., sin(v f_{half-1}), cos(v f_0), ..., cos(v f_{half-1})]
    (the sines and cosines of Vaswani et al. in blocks rather than interleaved). An odd `dim` gets
    one last column of zeros. Any real value works: integer steps, 1000 * t, log(sigma) / 4.
    Computed in float32 whatever the input dtype, so bf16 autocast does not round the phases.

    values: (B,) -> (B, dim).

    >>> sinusoidal_embedding(torch.tensor([0.0, 1.0]), 4)
    tensor([[0.0000, 0.0000, 1.0000, 1.0000],
            [0.8415, 0.0100, 0.5403, 0.9999]])
    """
    if dim < 1:
        raise ConfigError(f"embedding dim={dim} must be >= 1")
    half = dim // 2
    exponents = torch.arange(half, device=values.device, dtype=torch.float32) / max(half, 1)
    frequencies = torch.exp(-math.log(max_period) * exponents)  # (half,)
    phases = values.float()[:, None] * frequencies[None, :]  # (B,) -> (B, half)
    embedding = torch.cat([torch.sin(phases), torch.cos(phases)], dim=1)  # (B, 2 * half)
    if dim % 2:
        embedding = torch.cat([embedding, embedding.new_zeros(len(values), 1)], dim=1)  # (B, dim)
    return embedding


class NoiseLevelEmbedding(nn.Module):
    """The DDPM time MLP: sinusoidal_embedding(v, dim) -> Linear -> SiLU -> Linear.

    (B,) float noise-level values -> (B, hidden); hidden defaults to 4 * dim (Ho et al. 2020;
    DiT uses dim=256, hidden=width of the transformer).

    >>> embed = NoiseLevelEmbedding(32)
    >>> embed(torch.tensor([0.0, 999.0])).shape
    torch.Size([2, 128])
    """

    def __init__(self, dim: int, *, hidden: int | None = None, max_period: float = 10000.0) -> None:
        super().__init__()
        if dim < 1:
            raise ConfigError(f"noise-level embedding dim={dim} must be >= 1")
        self.dim = dim
        self.hidden = 4 * dim if hidden is None else hidden
        if self.hidden < 1:
            raise ConfigError(f"noise-level embedding hidden={hidden} must be >= 1 (or None for 4 * dim)")
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(dim, self.hidden), nn.SiLU(), nn.Linear(self.hidden, self.hidden))

    def forward(self, noise_level: Tensor) -> Tensor:
        features = sinusoidal_embedding(noise_level, self.dim, self.max_period)  # (B,) -> (B, dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))  # (B, dim) -> (B, hidden)


class ClassEmbedding(nn.Module):
    """A learned vector per class label, plus one for "no label": nn.Embedding(num_classes + 1, dim).

    Row `num_classes` (also `self.null_label`) is the unconditional token of classifier-free
    guidance (Ho & Salimans 2022): training replaces a fraction of the labels by it (label
    dropout), and sampling evaluates the network with and without the labels. `y=None` means
    "no label" for the whole batch, which needs `batch_size`.

    y: (B,) long in [0, num_classes] or None -> (B, dim).

    >>> embed = ClassEmbedding(10, 8)
    >>> embed(torch.tensor([3, 10])).shape, embed(None, batch_size=5).shape
    (torch.Size([2, 8]), torch.Size([5, 8]))
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes={num_classes} must be >= 1 (or None for an unconditional network)")
        self.num_classes = num_classes
        self.null_label = num_classes
        self.embedding = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: Tensor | None, batch_size: int | None = None) -> Tensor:
        if y is None:
            if batch_size is None:
                raise ValueError("ClassEmbedding(None) needs batch_size to know how many 'no label' rows to return")
            y = torch.full((batch_size,), self.null_label, dtype=torch.long, device=self.embedding.weight.device)
        return self.embedding(y)  # (B,) -> (B, dim)


class ConditionedNetwork(nn.Module):
    """Base of the denoising networks (UNet, DiT): presets by name and the conditioning vector.

    Subclasses set `presets` (name -> constructor fields) and build `noise_embedding` (a
    NoiseLevelEmbedding) and `class_embedding` (a ClassEmbedding, or None when unconditional).
    """

    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    noise_embedding: nn.Module
    class_embedding: nn.Module | None

    @classmethod
    def from_preset(cls, name: str, **fields: Any) -> "ConditionedNetwork":
        """cls(**presets[name], **fields): the preset's fields, overridden by the ones given (the data's
        sizes and channels among them)."""
        if name not in cls.presets:
            raise ConfigError(f"{cls.__name__} preset {name!r} is unknown; choose one of {', '.join(map(repr, cls.presets))}")
        return cls(**{**cls.presets[name], **fields})

    def embed(self, noise_level: Tensor, y: Tensor | None) -> Tensor:
        """The conditioning vector c = NoiseLevelEmbedding(noise_level) [+ ClassEmbedding(y)], (B, E)."""
        c = self.noise_embedding(noise_level)  # (B,) -> (B, E)
        if self.class_embedding is not None:
            c = c + self.class_embedding(y, batch_size=noise_level.shape[0])
        elif y is not None:
            raise ConfigError(f"labels y were passed to a {type(self).__name__} built with num_classes=None; build it with num_classes=K")
        return c
