"""Two-dimensional densities: model samples beside the model's density and the true one."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from genlab.viz._common import (
    as_points,
    finite_rows,
    new_figure,
    set_heading,
    save_figure,
    scatter_size,
    thin,
    view_bounds,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LogProb = Callable[[Tensor], Tensor]
Bounds = tuple[tuple[float, float], tuple[float, float]]
GRID_BATCH = 16384  # grid points per log_prob call: few calls, bounded memory
MAX_SCATTER = 5000
PANEL_INCHES = 4.0
MIN_HISTOGRAM_POINTS = 500  # fewer samples make a histogram too noisy to read as a density


def density_grid(
    log_prob: LogProb,
    bounds: Bounds,
    resolution: int = 200,
    *,
    batch_size: int = GRID_BATCH,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """log p on a resolution x resolution grid over bounds ((x_lo, x_hi), (y_lo, y_hi)).

    Returns (resolution, resolution) float64: row i is y = ys[i], column j is x = xs[j], with
    xs, ys = linspace over the bounds (image layout with origin at the lower left). Points go
    to `log_prob` as (B, 2) tensors on `device`, B <= batch_size, under no_grad.
    """
    (x_lo, x_hi), (y_lo, y_hi) = bounds
    xs = torch.linspace(x_lo, x_hi, resolution, dtype=dtype, device=device)
    ys = torch.linspace(y_lo, y_hi, resolution, dtype=dtype, device=device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)  # (R * R, 2), x fastest
    with torch.no_grad():
        parts = [log_prob(chunk).reshape(-1) for chunk in points.split(batch_size)]
    out = torch.cat(parts)
    if out.numel() != points.shape[0]:
        raise ValueError(f"log_prob returned {out.numel()} values for {points.shape[0]} points; it must return (B,)")
    return out.detach().to("cpu", torch.float64).reshape(resolution, resolution).numpy()


def _parse_bounds(bounds, reference: Tensor) -> Bounds:
    if bounds is None:
        (x_lo, x_hi), (y_lo, y_hi) = view_bounds(reference)[:2]
        return (x_lo, x_hi), (y_lo, y_hi)
    flat = np.asarray(bounds, dtype=float).reshape(-1)
    if flat.size == 2:  # one (low, high) for both axes
        flat = np.concatenate([flat, flat])
    if flat.size != 4 or not (flat[0] < flat[1] and flat[2] < flat[3]):
        raise ValueError(f"bounds must be ((x_lo, x_hi), (y_lo, y_hi)) with lo < hi, got {bounds}")
    return (float(flat[0]), float(flat[1])), (float(flat[2]), float(flat[3]))


def _scatter(ax, points: Tensor, bounds: Bounds, title: str, color: str) -> None:
    points = thin(points, MAX_SCATTER)
    x, y = points[:, 0].numpy(), points[:, 1].numpy()
    ax.scatter(x, y, s=scatter_size(len(points)), c=color, alpha=0.6, lw=0)
    _frame(ax, bounds, title)


def _heat_map(ax, log_p: np.ndarray, bounds: Bounds, title: str) -> None:
    """Draw p = exp(log p); the title carries the mass in view (sum p dx dy), a check that a
    normalised model puts its probability where the data is."""
    (x_lo, x_hi), (y_lo, y_hi) = bounds
    with np.errstate(over="ignore", invalid="ignore"):
        p = np.exp(log_p)
    p[~np.isfinite(p)] = np.nan  # shown blank rather than breaking the colour scale
    r = log_p.shape[0]
    dx, dy = (x_hi - x_lo) / max(r - 1, 1), (y_hi - y_lo) / max(r - 1, 1)
    if np.isfinite(p).any():
        title += f"\nmass in view ~ {np.nansum(p) * dx * dy:.3g}"
    else:
        title += "\n(no finite log_prob in view)"
    extent = (x_lo, x_hi, y_lo, y_hi)
    im = ax.imshow(p, origin="lower", extent=extent, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, shrink=0.8)
    _frame(ax, bounds, title)


def _histogram(ax, points: Tensor, bounds: Bounds, title: str) -> None:
    """The samples' normalised 2-D histogram: a density estimate for models without log_prob (GANs,
    diffusion), on the same axes and colour map as the densities beside it. Bins: about sqrt(N / 4)
    per axis (4 points per bin on average over a square), from 20 to 100."""
    (x_lo, x_hi), (y_lo, y_hi) = bounds
    bins = int(min(100, max(20, (len(points) / 4) ** 0.5)))
    counts, _, _ = np.histogram2d(points[:, 0].numpy(), points[:, 1].numpy(), bins=bins, range=[[x_lo, x_hi], [y_lo, y_hi]])
    area = (x_hi - x_lo) * (y_hi - y_lo) / bins**2
    p = counts.T / (len(points) * area)  # rows are y, as the heat maps
    im = ax.imshow(p, origin="lower", extent=(x_lo, x_hi, y_lo, y_hi), aspect="auto", cmap="viridis", interpolation="nearest")
    ax.figure.colorbar(im, ax=ax, shrink=0.8)
    _frame(ax, bounds, f"{title}\n{bins}x{bins} bins, n={len(points)}")


def _frame(ax, bounds: Bounds, title: str) -> None:
    ax.set_xlim(*bounds[0])
    ax.set_ylim(*bounds[1])
    ax.set_title(title, fontsize=10)


def density_figure(
    samples: Tensor,
    *,
    log_prob: LogProb | None = None,
    true_log_prob: LogProb | None = None,
    data: Tensor | None = None,
    bounds: Bounds | Sequence[float] | None = None,
    resolution: int = 200,
    title: str | None = None,
) -> "Figure":
    """The figure of `plot_density_2d`, returned instead of saved (for notebooks and reports).
    One panel of PANEL_INCHES x PANEL_INCHES inches per picture, side by side."""
    if resolution < 2:
        raise ValueError(f"resolution must be at least 2, got {resolution}")
    # the grid goes to log_prob on the samples' device and in their float dtype, where the model is
    device, dtype = torch.device("cpu"), torch.float32
    if isinstance(samples, Tensor):
        device, dtype = samples.device, samples.dtype if samples.is_floating_point() else torch.float32
    pts, dat = as_points(samples, "samples"), as_points(data, "data")
    for name, x in (("samples", pts), ("data", dat)):
        if x is not None and x.shape[1] != 2:
            raise ValueError(f"plot_density_2d draws 2-D points; {name} have shape {tuple(x.shape)}")
    pts, bad_samples = finite_rows(pts)
    bad_data = 0
    if dat is not None:
        dat, bad_data = finite_rows(dat)
    box = _parse_bounds(bounds, dat if dat is not None and len(dat) else pts)

    histogram = log_prob is None and len(pts) >= MIN_HISTOGRAM_POINTS
    panels = (dat is not None) + 1 + (log_prob is not None or histogram) + (true_log_prob is not None)
    fig = new_figure(PANEL_INCHES * panels, PANEL_INCHES)
    axes = iter(fig.subplots(1, panels, squeeze=False)[0])
    if dat is not None:
        _scatter(next(axes), dat, box, f"data (n={len(dat)})", "tab:gray")
    _scatter(next(axes), pts, box, f"model samples (n={len(pts)})", "tab:blue")
    if histogram:
        _histogram(next(axes), pts, box, "model samples, histogram")
    for name, fn in (("model density", log_prob), ("true density", true_log_prob)):
        if fn is not None:
            _heat_map(next(axes), density_grid(fn, box, resolution, device=device, dtype=dtype), box, name)
    set_heading(fig, title, {"sample": bad_samples, "data": bad_data}, fontsize=11)
    return fig


def plot_density_2d(
    samples: Tensor,
    path: str | os.PathLike,
    *,
    log_prob: LogProb | None = None,
    true_log_prob: LogProb | None = None,
    data: Tensor | None = None,
    bounds: Bounds | Sequence[float] | None = None,
    resolution: int = 200,
    title: str | None = None,
) -> Path:
    """Save a row of panels for 2-D points as a PNG: the data scatter (if `data` (M, 2) is
    given), the model samples (N, 2) scatter, the model density exp(log_prob) on a grid (if
    `log_prob` maps (B, 2) -> (B,); without it, the samples' histogram when N >= 500) and the
    true density (if `true_log_prob` is known).

    The densities are evaluated on resolution x resolution grid points in batches of GRID_BATCH
    (ceil(resolution**2 / GRID_BATCH) calls), on the samples' device. bounds: ((x_lo, x_hi),
    (y_lo, y_hi)), default the data's extent (or the samples' without data) plus a 10% margin;
    every panel shares them. Non-finite sample rows are left out and counted in the title.
    The PNG is PANEL_INCHES * 100 pixels square per panel, written atomically.
    """
    fig = density_figure(
        samples, log_prob=log_prob, true_log_prob=true_log_prob, data=data,
        bounds=bounds, resolution=resolution, title=title,
    )
    return save_figure(fig, path)

