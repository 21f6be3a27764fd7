"""The Fréchet distance between Gaussians fitted to features, and FID (Heusel et al. 2017).

FID compares two sets of features by the Fréchet (2-Wasserstein) distance of the Gaussians with
their means and covariances:

    d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}).

Everything is computed in float64 on the CPU with numpy: the trace term is a difference of large
nearly equal numbers, and float32 loses several digits of it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from genlab.errors import DataError

ArrayLike = Tensor | np.ndarray


def _as_float64(a: ArrayLike) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def gaussian_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), in float64, of features (N, D) with N >= 2.

    Cache the statistics of the real data once and pass them to `frechet_distance`.
    """
    f = _as_float64(features)
    if f.ndim != 2:
        raise DataError(f"features must have shape (N, D), got {f.shape}")
    if f.shape[0] < 2:
        raise DataError(f"a covariance needs at least 2 feature vectors, got {f.shape[0]}")
    if not np.isfinite(f).all():
        raise DataError("features contain NaN or infinite values; check the samples fed to the extractor")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix, by eigh.

    Eigenvalues below the round-off level of the largest (D * machine epsilon * lambda_max),
    negatives included, are set to 0: they are zero up to round-off, and a square root would blow
    round-off of 1e-16 up to 1e-8."""
    eigenvalues, eigenvectors = np.linalg.eigh(sigma)
    floor = sigma.shape[0] * np.finfo(np.float64).eps * max(eigenvalues.max(initial=0.0), 0.0)
    roots = np.sqrt(np.where(eigenvalues > floor, eigenvalues, 0.0))
    return (eigenvectors * roots) @ eigenvectors.T


def frechet_distance(
    mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, *, eps: float = 0.0
) -> float:
    """Squared Fréchet distance between N(mu1, S1) and N(mu2, S2)  (Heusel et al. 2017, eq. 6;
    Dowson & Landau 1982):

        d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}).

    mu1, mu2: (D,); sigma1, sigma2: (D, D) symmetric positive semi-definite. Returns a float >= 0
    (up to round-off).

    Numerics. S1 S2 is not symmetric, so `scipy.linalg.sqrtm(S1 @ S2)` (pytorch-fid's route) can
    return complex values with small imaginary parts, or fail when a covariance is singular (fewer
    samples than dimensions, dead features); pytorch-fid then adds eps * I to both covariances and
    drops the imaginary parts. Here no complex number arises: with B = S1^{1/2} S2^{1/2} (symmetric
    square roots by `eigh`), S1 S2 is similar to S1^{1/2} S2 S1^{1/2} = B B^T, whose square root
    has eigenvalues the singular values of B, so

        Tr (S1 S2)^{1/2} = sum_i sigma_i(S1^{1/2} S2^{1/2})   (the nuclear norm of B).

    Singular values are computed to an absolute error of about machine epsilon times |B|, without
    the square root of round-off that eigenvalues of S1 S2 would bring (1e-16 -> 1e-8 per null
    direction); singular covariances need no special case. `eps` > 0 adds eps * I to both
    covariances, as pytorch-fid's fallback does (it changes the distance by O(D * eps)); it is 0 by
    default because this route does not need it.
    """
    mu1, mu2 = _as_float64(mu1).reshape(-1), _as_float64(mu2).reshape(-1)
    sigma1, sigma2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise DataError(
            f"Fréchet distance needs means (D,) and covariances (D, D) of one D; got means {mu1.shape}, "
            f"{mu2.shape} and covariances {sigma1.shape}, {sigma2.shape}"
        )
    for name, a in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise DataError(f"{name} has NaN or infinite values")
    if eps > 0:
        sigma1 = sigma1 + eps * np.eye(d)
        sigma2 = sigma2 + eps * np.eye(d)
    # symmetrise: an estimated covariance can be asymmetric by round-off, and eigh reads one triangle
    sigma1 = 0.5 * (sigma1 + sigma1.T)
    sigma2 = 0.5 * (sigma2 + sigma2.T)

    trace_sqrt_product = np.linalg.svd(_psd_sqrt(sigma1) @ _psd_sqrt(sigma2), compute_uv=False).sum()

    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product)


def fid(features_real: ArrayLike, features_fake: ArrayLike, *, eps: float = 0.0) -> float:
    """Fréchet Inception Distance between two feature sets (Heusel et al. 2017):

        FID = |mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^{1/2}),

    with mu, S the mean and covariance of features_real (N, D) and features_fake (M, D). The
    "Inception" is whatever extractor made the features: numbers are comparable only between runs
    that used the same extractor and similar sample sizes (FID is biased upwards for small N).
    """
    mu_r, sigma_r = gaussian_statistics(features_real)
    mu_f, sigma_f = gaussian_statistics(features_fake)
    return frechet_distance(mu_r, sigma_r, mu_f, sigma_f, eps=eps)
