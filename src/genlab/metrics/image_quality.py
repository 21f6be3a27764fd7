"""Full-reference image quality for restoration (super-resolution): PSNR and SSIM, per image.

    PSNR(x, y) = 10 log10(L^2 / MSE(x, y)),  L the data range (1 for images in [0, 1]);
    SSIM(x, y) = mean over windows of (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))
                 (Wang et al. 2004), moments under a Gaussian window of sigma 1.5 pixels (radius 5),
                 C1 = (0.01 L)^2, C2 = (0.03 L)^2, population (co)variances, averaged over the
                 positions where the window lies inside the image and over the channels: scikit-image's
                 `structural_similarity(..., gaussian_weights=True, use_sample_covariance=False)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.errors import DataError

__all__ = ["psnr", "ssim"]


def _pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if x.shape != y.shape or x.dim() != 4:
        raise DataError(f"compare images of one shape (B, C, H, W); got {tuple(x.shape)} and {tuple(y.shape)}")
    return x.double(), y.double()


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """10 log10(L^2 / mean (x - y)^2) per image, (B,); inf for identical images."""
    x, y = _pair(x, y)
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, sigma: float = 1.5) -> Tensor:
    """The structural similarity of each pair (module docstring), (B,), in [-1, 1]; 1 for identical images."""
    x, y = _pair(x, y)
    radius = int(3.5 * sigma + 0.5)
    if min(x.shape[-2:]) < 2 * radius + 1:
        raise DataError(f"SSIM's {2 * radius + 1}x{2 * radius + 1} window does not fit images of {x.shape[-2]}x{x.shape[-1]}")
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    g = torch.exp(-0.5 * (offsets / sigma) ** 2)
    g = g / g.sum()
    channels = x.shape[1]
    window_h = g.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    window_v = g.view(1, 1, -1, 1).expand(channels, 1, -1, 1)

    def blur(t: Tensor) -> Tensor:  # positions where the window lies inside the image
        return F.conv2d(F.conv2d(t, window_h, groups=channels), window_v, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)
