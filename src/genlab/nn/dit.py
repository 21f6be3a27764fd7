"""The Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

    x (B, C, H, W) --patchify conv--> tokens (B, T, D) + fixed 2D sin-cos positions
    c = NoiseLevelEmbedding(noise level) + ClassEmbedding(y)                      (B, D)
    depth x DiT block with adaLN-Zero: shift, scale, gate = Linear(SiLU(c)), that Linear zero-initialised,
        x = x + gate_msa * Attention(LN(x) * (1 + scale_msa) + shift_msa)
        x = x + gate_mlp * MLP(LN(x) * (1 + scale_mlp) + shift_mlp)
    final layer: LN(x) * (1 + scale) + shift -> Linear (zero-initialised) -> (B, T, p * p * C_out)
    unpatchify -> (B, C_out, H, W)
Every residual branch and the output start at zero, so the network first outputs exactly 0.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.nn.attention import MultiHeadSelfAttention
from genlab.nn.embeddings import ClassEmbedding, ConditionedNetwork, NoiseLevelEmbedding
from genlab.nn.mlp import MLP

FREQUENCY_DIM = 256  # width of the sinusoidal noise-level features (DiT's frequency_embedding_size)


def _dit_presets() -> dict[str, dict[str, Any]]:
    # Peebles & Xie 2023, table 1: the four model sizes, each with patch 2, 4 and 8
    sizes = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}
    presets = {
        f"DiT-{name}/{patch}": dict(hidden_size=hidden, depth=depth, num_heads=heads, patch_size=patch)
        for name, (hidden, depth, heads) in sizes.items()
        for patch in (2, 4, 8)
    }
    presets["tiny"] = dict(hidden_size=64, depth=4, num_heads=4, patch_size=2)  # not in the paper: 8x8 digits on a CPU
    return presets


# Architecture presets for DiT.from_preset; input_size and channels come from the data.
DIT_PRESETS: dict[str, dict[str, Any]] = _dit_presets()


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """Cut an image into non-overlapping p x p patches, each flattened in (p_row, p_col, channel) order.

    (B, C, H, W) -> (B, (H / p) * (W / p), p * p * C), patches in row-major order.

    >>> patchify(torch.randn(2, 3, 8, 6), 2).shape
    torch.Size([2, 12, 12])
    """
    batch, channels, height, width = x.shape
    p = patch_size
    x = x.reshape(batch, channels, height // p, p, width // p, p)  # (B, C, h, p, w, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, p, C)
    return x.reshape(batch, (height // p) * (width // p), p * p * channels)


def unpatchify(tokens: Tensor, patch_size: int, grid_size: tuple[int, int]) -> Tensor:
    """The inverse of `patchify`: (B, h * w, p * p * C) -> (B, C, h * p, w * p) for grid_size = (h, w).

    >>> x = torch.randn(2, 3, 8, 6)
    >>> torch.equal(unpatchify(patchify(x, 2), 2, (4, 3)), x)
    True
    """
    batch, _, features = tokens.shape
    (h, w), p = grid_size, patch_size
    channels = features // (p * p)
    x = tokens.reshape(batch, h, w, p, p, channels)  # (B, h, w, p, p, C)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p)
    return x.reshape(batch, channels, h * p, w * p)


def sincos_position_embedding(dim: int, grid_size: tuple[int, int]) -> Tensor:
    """Fixed 2D sin-cos positions (Vaswani et al. 2017 per axis, as in MAE and DiT): (h * w, dim).

    The first dim / 2 features embed the row index, the last dim / 2 the column index, each as
    [sin(pos * f_i), cos(pos * f_i)] with f_i = 10000^(-i / (dim / 4)), i = 0 .. dim / 4 - 1.
    """
    if dim % 4:
        raise ConfigError(f"DiT hidden_size={dim} must be divisible by 4 for the 2D sin-cos positions")
    quarter = dim // 4
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(quarter, dtype=torch.float64) / quarter)  # (dim / 4,)
    rows, cols = torch.meshgrid(
        torch.arange(grid_size[0], dtype=torch.float64), torch.arange(grid_size[1], dtype=torch.float64), indexing="ij"
    )
    phases_rows = rows.reshape(-1, 1) * frequencies  # (h * w, dim / 4)
    phases_cols = cols.reshape(-1, 1) * frequencies
    embedding = torch.cat([phases_rows.sin(), phases_rows.cos(), phases_cols.sin(), phases_cols.cos()], dim=1)
    return embedding.float()  # (h * w, dim)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """Adaptive layer-norm modulation x * (1 + scale) + shift; x: (B, T, D), shift, scale: (B, D)."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning (Peebles & Xie 2023, fig. 3): (B, T, D), (B, D) -> (B, T, D).

    The six modulation vectors come from Linear(SiLU(c)), initialised at zero, so every gate is 0
    and the block starts as the identity.
    """

    def __init__(self, hidden_size: int, *, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm_attention = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attention = MultiHeadSelfAttention(hidden_size, num_heads=num_heads)
        self.norm_mlp = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(hidden_size, hidden_size, hidden=(int(hidden_size * mlp_ratio),), activation="gelu")
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(c).chunk(6, dim=1)  # (B, 6D) -> 6 x (B, D)
        x = x + gate_msa[:, None, :] * self.attention(modulate(self.norm_attention(x), shift_msa, scale_msa))
        return x + gate_mlp[:, None, :] * self.mlp(modulate(self.norm_mlp(x), shift_mlp, scale_mlp))


class DiT(ConditionedNetwork):
    """Diffusion Transformer (Peebles & Xie 2023): (x_t, noise level, label) -> (B, out_channels, H, W).

    Keyword-only. input_size: side (or (H, W)) of the input, divisible by patch_size;
    out_channels defaults to in_channels (2 * in_channels when the model learns the variance too,
    the paper's learn_sigma); hidden_size, depth, num_heads, mlp_ratio: the transformer;
    num_classes: add a ClassEmbedding (with the classifier-free "no label" token) to the
    conditioning vector. See DIT_PRESETS and `from_preset`.

    forward(x (B, in_channels, H, W), noise_level (B,) float, y (B,) long or None)
        -> (B, out_channels, H, W).

    >>> net = DiT.from_preset("tiny", input_size=8, in_channels=1, num_classes=10)
    >>> out = net(torch.randn(2, 1, 8, 8), torch.tensor([10.0, 500.0]), torch.tensor([3, 10]))
    >>> out.shape, bool((out == 0).all())  # adaLN-Zero: the output starts at exactly zero
    (torch.Size([2, 1, 8, 8]), True)
    """

    presets = DIT_PRESETS

    def __init__(
        self,
        *,
        input_size: int | Sequence[int],
        patch_size: int,
        in_channels: int,
        out_channels: int | None = None,
        hidden_size: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(int(s) for s in input_size)
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"DiT input_size={input_size!r} must be a positive int or a pair (H, W)")
        if patch_size < 1 or size[0] % patch_size or size[1] % patch_size:
            raise ConfigError(f"DiT patch_size={patch_size} must divide input_size={size}; choose a patch size that divides both sides")
        if depth < 1 or hidden_size < 1 or mlp_ratio <= 0:
            raise ConfigError(f"DiT depth={depth}, hidden_size={hidden_size} and mlp_ratio={mlp_ratio} must be positive")
        self.input_size = size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        self.grid_size = (size[0] // patch_size, size[1] // patch_size)
        self.num_classes = num_classes

        self.patch_embedding = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        # fixed, not learned: a buffer, rebuilt at construction (not saved in checkpoints)
        self.register_buffer("position_embedding", sincos_position_embedding(hidden_size, self.grid_size)[None], persistent=False)
        self.noise_embedding = NoiseLevelEmbedding(FREQUENCY_DIM, hidden=hidden_size)
        self.class_embedding = ClassEmbedding(num_classes, hidden_size) if num_classes is not None else None
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads=num_heads, mlp_ratio=mlp_ratio) for _ in range(depth)])
        self.final_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.final_linear = nn.Linear(hidden_size, patch_size * patch_size * self.out_channels)
        self._initialize()

    def _initialize(self) -> None:
        # Peebles & Xie 2023, sec. 3: Xavier-uniform linear maps, N(0, 0.02^2) embeddings, adaLN-Zero
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        weight = self.patch_embedding.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))  # as a Linear map of the flattened patch
        nn.init.zeros_(self.patch_embedding.bias)
        for linear in (self.noise_embedding.mlp[0], self.noise_embedding.mlp[2]):
            nn.init.normal_(linear.weight, std=0.02)
        if self.class_embedding is not None:
            nn.init.normal_(self.class_embedding.embedding.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.modulation[-1].weight)
            nn.init.zeros_(block.modulation[-1].bias)
        for linear in (self.final_modulation[-1], self.final_linear):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x: Tensor, noise_level: Tensor, y: Tensor | None = None) -> Tensor:
        if tuple(x.shape[-2:]) != self.input_size:
            raise ConfigError(
                f"DiT built for input_size={self.input_size} got inputs of size {tuple(x.shape[-2:])}; build it with that input_size"
            )
        h = self.patch_embedding(x)  # (B, C, H, W) -> (B, D, H / p, W / p)
        h = h.flatten(2).transpose(1, 2) + self.position_embedding  # (B, D, h, w) -> (B, T, D)
        c = self.embed(noise_level, y)  # (B, D)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_modulation(c).chunk(2, dim=1)  # (B, 2D) -> 2 x (B, D)
        h = self.final_linear(modulate(self.final_norm(h), shift, scale))  # (B, T, D) -> (B, T, p * p * C_out)
        return unpatchify(h, self.patch_size, self.grid_size)  # (B, T, p * p * C_out) -> (B, C_out, H, W)
