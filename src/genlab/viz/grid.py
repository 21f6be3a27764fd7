"""Image grids: many samples tiled into one picture, and written as a PNG."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from genlab.viz._common import atomic_write

MIN_WIDTH = 256  # automatic upscaling makes a saved grid at least this many pixels wide


def make_grid(
    images: Tensor,
    nrow: int | None = None,
    padding: int = 2,
    pad_value: float = 1.0,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """Tile images (N, C, H, W) into one image (C, rows * (H + p) + p, nrow * (W + p) + p).

    nrow: images per row (torchvision's meaning), default ceil(sqrt(N)); image k sits in row
    k // nrow, column k % nrow, its top-left pixel at (p + row * (H + p), p + col * (W + p)).
    Tiles past the last image are filled with `pad_value`. Values are clamped to `value_range`
    and mapped to [0, 1]; `pad_value` is in that [0, 1] output scale. Non-finite values become
    0 (NaN, -inf) or 1 (+inf), so a diverged sample shows instead of crashing the picture.

    >>> make_grid(torch.zeros(3, 1, 2, 2), nrow=2, padding=1).shape
    torch.Size([1, 7, 7])
    """
    if isinstance(images, (list, tuple)):
        images = torch.stack(list(images))
    if images.ndim != 4:
        raise ValueError(f"make_grid wants images of shape (N, C, H, W), got {tuple(images.shape)}")
    n, c, h, w = images.shape
    if n == 0:
        raise ValueError("make_grid got no images (N = 0)")
    ncol = min(n, nrow if nrow is not None else math.ceil(math.sqrt(n)))
    if ncol < 1:
        raise ValueError(f"nrow must be at least 1, got {nrow}")
    nrows = math.ceil(n / ncol)
    lo, hi = value_range
    if hi <= lo:
        raise ValueError(f"value_range must have low < high, got {value_range}")

    x = (images.detach().float() - lo) / (hi - lo)
    x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
    if nrows * ncol > n:
        x = torch.cat([x, x.new_full((nrows * ncol - n, c, h, w), pad_value)])
    p = padding
    x = F.pad(x, (p, 0, p, 0), value=pad_value)  # padding above and left of every tile
    th, tw = h + p, w + p
    x = x.reshape(nrows, ncol, c, th, tw).permute(2, 0, 3, 1, 4)  # (C, rows, th, ncol, tw)
    x = x.reshape(c, nrows * th, ncol * tw)
    return F.pad(x, (0, p, 0, p), value=pad_value)  # close the last row and column


def to_uint8_image(grid: Tensor) -> np.ndarray:
    """An image (C, H, W) with values in [0, 1] as uint8 pixels: (H, W) for C = 1, (H, W, C)
    for C = 3 (RGB) or 4 (RGBA). Rounds to the nearest of the 256 levels."""
    if grid.ndim != 3 or grid.shape[0] not in (1, 3, 4):
        raise ValueError(f"to_uint8_image wants (C, H, W) with C in 1, 3 or 4, got {tuple(grid.shape)}")
    x = torch.nan_to_num(grid.detach().float().cpu(), nan=0.0).clamp(0.0, 1.0)
    x = x.mul(255.0).round_().to(torch.uint8)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).contiguous().numpy()


def auto_upscale(n: int, width: int, nrow: int | None = None, padding: int = 2) -> int:
    """The smallest integer factor that makes a grid of n images of `width` pixels at least
    `MIN_WIDTH` pixels wide (1 when it already is)."""
    ncol = min(n, nrow or math.ceil(math.sqrt(n)))
    inner = MIN_WIDTH - padding * (ncol + 1)
    return max(1, math.ceil(inner / (ncol * width)))


def save_image_grid(
    images: Tensor,
    path: str | os.PathLike,
    *,
    nrow: int | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    upscale: int | None = None,
    padding: int = 2,
    pad_value: float = 1.0,
) -> Path:
    """Write images (N, C, H, W), C = 1 (grayscale PNG, mode 'L') or 3 (RGB), as one PNG grid.

    upscale: integer nearest-neighbour factor applied to every image before tiling (the padding
    stays `padding` pixels); None picks the smallest factor making the grid >= 256 px wide, so
    8x8 digits are visible. The file is written atomically; parent folders are created.
    """
    if images.ndim != 4:
        raise ValueError(f"save_image_grid wants images of shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"save_image_grid writes 1 (grayscale) or 3 (RGB) channels, got C = {images.shape[1]}")
    if upscale is None:
        upscale = auto_upscale(images.shape[0], images.shape[3], nrow, padding)
    if upscale < 1:
        raise ValueError(f"upscale must be a positive integer, got {upscale}")
    if upscale > 1:
        images = images.repeat_interleave(upscale, dim=2).repeat_interleave(upscale, dim=3)
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value, value_range=value_range)
    picture = Image.fromarray(to_uint8_image(grid))
    return atomic_write(path, lambda f: picture.save(f, format="PNG"))
