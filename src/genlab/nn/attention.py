"""Multi-head self-attention over tokens, and its residual form over the pixels of a feature map.

Both compute softmax(Q K^T / sqrt(d)) V per head (Vaswani et al. 2017, eq. 1) with
`torch.nn.functional.scaled_dot_product_attention`, which picks a fused kernel where one exists.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention on tokens: (B, T, D) -> (B, T, D).

    q, k, v = split(x W_qkv + b_qkv) into `num_heads` heads of width d = D / num_heads;
    out = concat_h(softmax(q_h k_h^T / sqrt(d)) v_h) W_proj + b_proj.
    zero_init_proj: start W_proj, b_proj at zero, so a residual x + attention(x) starts as x.

    >>> import torch
    >>> MultiHeadSelfAttention(16, num_heads=4)(torch.randn(2, 5, 16)).shape
    torch.Size([2, 5, 16])
    """

    def __init__(self, dim: int, *, num_heads: int = 1, zero_init_proj: bool = False) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ConfigError(f"num_heads={num_heads} must be >= 1 and divide the width {dim}; choose a divisor of {dim}")
        self.dim, self.num_heads = dim, num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        if zero_init_proj:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)  # (B, T, D) -> (B, T, 3, heads, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, heads, T, d)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, d)
        h = h.transpose(1, 2).reshape(batch, tokens, dim)  # (B, heads, T, d) -> (B, T, D)
        return self.proj(h)


class SpatialSelfAttention(nn.Module):
    """Residual self-attention over the H * W positions of a feature map (Ho et al. 2020, the DDPM
    UNet's AttnBlock; Wang et al. 2018): x + proj(attention(GroupNorm(x))).

    The query/key/value and output maps are 1x1 convolutions, written as Linear maps on the
    (B, H * W, C) tokens (the same thing). The output map starts at zero, so the block starts as
    the identity. GroupNorm uses gcd(channels, groups) groups. Works for contiguous and
    channels_last inputs and under bf16 autocast.

    (B, C, H, W) -> (B, C, H, W).

    >>> import torch
    >>> block = SpatialSelfAttention(32, num_heads=2)
    >>> x = torch.randn(2, 32, 4, 4)
    >>> bool((block(x) == x).all())  # zero-initialised output map: identity at init
    True
    """

    def __init__(self, channels: int, *, num_heads: int = 1, groups: int = 32) -> None:
        super().__init__()
        if groups < 1:
            raise ConfigError(f"attention groups={groups} must be >= 1")
        self.channels = channels
        self.norm = nn.GroupNorm(math.gcd(channels, groups), channels)
        self.attention = MultiHeadSelfAttention(channels, num_heads=num_heads, zero_init_proj=True)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H * W, C)
        h = self.attention(tokens)  # (B, H * W, C)
        h = h.transpose(1, 2).reshape(batch, channels, height, width)  # (B, H * W, C) -> (B, C, H, W)
        return x + h
