"""Improved precision and recall of generative models (Kynkäänniemi et al. 2019).

Each set of features defines a manifold estimate: the union of balls around its points whose
radius is the distance to the point's k-th nearest neighbour within the set. Precision is the
fraction of fake samples inside the real manifold (quality); recall is the fraction of real
samples inside the fake manifold (coverage). Distances are computed in row blocks with
torch.cdist, so memory stays bounded (a few tens of MiB) for N = 10,000 and more.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from genlab.errors import ConfigError, DataError

_BLOCK_ELEMENTS = 1 << 23  # distances held at once: 32 MiB in float32


def _block_rows(n_columns: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(1, n_columns))


def knn_radii(features: Tensor, k: int) -> Tensor:
    """Distance from each row of features (N, D) to its k-th nearest other row -> (N,).

    The point itself, at distance 0, is the first of the k + 1 nearest and is skipped."""
    n = features.shape[0]
    radii = torch.empty(n, dtype=features.dtype, device=features.device)
    rows = _block_rows(n)
    for start in range(0, n, rows):
        d = torch.cdist(features[start : start + rows], features)  # (rows, N)
        radii[start : start + rows] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return radii


def inside_manifold(query: Tensor, support: Tensor, radii: Tensor) -> Tensor:
    """For each query row, whether |query - support_j| <= radii_j for some j -> bool (Q,)."""
    inside = torch.empty(query.shape[0], dtype=torch.bool, device=query.device)
    rows = _block_rows(support.shape[0])
    for start in range(0, query.shape[0], rows):
        d = torch.cdist(query[start : start + rows], support)  # (rows, S)
        inside[start : start + rows] = (d <= radii[None, :]).any(dim=1)
    return inside


def _as_features(x: Tensor | np.ndarray, name: str) -> Tensor:
    x = torch.as_tensor(x).detach()
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise DataError(f"{name} must have shape (N, D), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise DataError(f"{name} has NaN or infinite values")
    return x if x.is_floating_point() else x.float()


def precision_recall(
    features_real: Tensor | np.ndarray, features_fake: Tensor | np.ndarray, *, k: int = 3
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, eqs. 1-3), k = 3 as in the paper.

    With r_k(phi) the distance from phi to its k-th nearest neighbour in its own set,
        f(phi, Phi) = 1 if |phi - phi'| <= r_k(phi') for some phi' in Phi, else 0,
        precision = mean_{phi_g in fake} f(phi_g, Phi_real),
        recall    = mean_{phi_r in real} f(phi_r, Phi_fake).
    features_real (N, D), features_fake (M, D); 1-D inputs are read as N scalars. Both sets need
    more than k points. The paper uses equal set sizes (as large as affordable, e.g. 10k-50k).
    """
    real = _as_features(features_real, "features_real")
    fake = _as_features(features_fake, "features_fake").to(real.dtype)
    if real.shape[1] != fake.shape[1]:
        raise DataError(f"real and fake features have different dimensions: {real.shape[1]} and {fake.shape[1]}")
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if real.shape[0] <= k or fake.shape[0] <= k:
        raise DataError(
            f"precision/recall with k={k} needs more than {k} samples per set, "
            f"got {real.shape[0]} and {fake.shape[0]}"
        )
    fake = fake.to(real.device)
    precision = inside_manifold(fake, real, knn_radii(real, k)).float().mean().item()
    recall = inside_manifold(real, fake, knn_radii(fake, k)).float().mean().item()
    return precision, recall
