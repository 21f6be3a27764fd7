"""Denoising trajectories: the path a sampler takes from noise to data, as snapshots side by side.

For images, a grid with one row per sample and one column per snapshot (noise on the left, the
sample on the right); for 2-D points, one scatter panel per snapshot on shared axes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from genlab.data.dataset import DataSpec
from genlab.viz._common import as_points, finite_rows, new_figure, save_figure, scatter_size, thin, view_bounds
from genlab.viz.grid import make_grid, to_uint8_image

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PANEL_INCHES = 2.2
MAX_POINTS = 2000


def snapshot_indices(length: int, columns: int) -> list[int]:
    """`columns` indices into a path of `length` states, evenly spaced, always the first and the last.

    >>> snapshot_indices(11, 3), snapshot_indices(3, 8)
    ([0, 5, 10], [0, 1, 2])
    """
    if length < 1 or columns < 1:
        raise ValueError(f"need a path of at least one state and at least one column, got {length} and {columns}")
    if columns >= length:
        return list(range(length))
    if columns == 1:
        return [length - 1]
    return sorted({round(i * (length - 1) / (columns - 1)) for i in range(columns)})


def trajectory_figure(
    trajectory: Sequence[Tensor],
    spec: DataSpec,
    *,
    times: Sequence[float] | None = None,
    columns: int = 8,
    rows: int = 8,
    title: str | None = None,
) -> "Figure":
    """The figure of `plot_trajectory`, returned instead of saved.

    trajectory: states x_t in the data's space, each (B, *spec.shape), from noise to data (as
    `SampleResult.trajectory` after `to_data_space`); times: the time of each state (labels only).
    """
    if len(trajectory) == 0:
        raise ValueError("the trajectory is empty; sample with return_trajectory=True")
    if times is not None and len(times) != len(trajectory):
        raise ValueError(f"{len(times)} times for {len(trajectory)} states; pass one time per state")
    picked = snapshot_indices(len(trajectory), columns)
    labels = [f"step {i}" if times is None else f"t = {float(times[i]):.3g}" for i in picked]
    if spec.kind == "image":
        return _image_figure([trajectory[i] for i in picked], labels, spec, rows, title)
    if spec.dim != 2:
        raise ValueError(f"trajectories are drawn for images and 2-D points; this data has shape {spec.shape}")
    return _points_figure([trajectory[i] for i in picked], labels, title)


def plot_trajectory(
    trajectory: Sequence[Tensor],
    spec: DataSpec,
    path: str | os.PathLike,
    *,
    times: Sequence[float] | None = None,
    columns: int = 8,
    rows: int = 8,
    title: str | None = None,
) -> Path:
    """Save `columns` evenly spaced snapshots of a sampling path as a PNG, atomically.

    Images: rows = the first `rows` samples, columns = snapshots from noise (left) to data
    (right), over `spec.value_range` (noisy states beyond it are clamped for display). 2-D
    points: one scatter per snapshot, at most MAX_POINTS points, on the last state's bounds
    widened to include the start.
    """
    fig = trajectory_figure(trajectory, spec, times=times, columns=columns, rows=rows, title=title)
    return save_figure(fig, path)


def _image_figure(states: list[Tensor], labels: list[str], spec: DataSpec, rows: int, title: str | None) -> "Figure":
    n = min(rows, states[0].shape[0])
    # (n, k, C, H, W) -> sample-major order, so make_grid with nrow = k puts each path on a row
    tiles = torch.stack([s[:n].detach().float().cpu() for s in states], dim=1).flatten(0, 1)
    grid = to_uint8_image(make_grid(tiles, nrow=len(states), value_range=spec.value_range))
    k = len(states)
    fig = new_figure(max(4.0, 0.9 * k), max(2.0, 0.9 * n) + 0.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    width = grid.shape[1]
    ax.set_xticks([(i + 0.5) * width / k for i in range(k)], labels, fontsize=8, rotation=30)
    ax.set_yticks([])
    ax.set_title(title or "sampling path: noise (left) to data (right)", fontsize=10)
    return fig


def _points_figure(states: list[Tensor], labels: list[str], title: str | None) -> "Figure":
    points = [finite_rows(as_points(s, "trajectory state"))[0] for s in states]
    bounds = view_bounds(torch.cat([points[-1], points[0]]))
    fig = new_figure(PANEL_INCHES * len(points), PANEL_INCHES + 0.4)
    for j, (p, label) in enumerate(zip(points, labels)):
        ax = fig.add_subplot(1, len(points), j + 1)
        p = thin(p, MAX_POINTS)
        ax.scatter(p[:, 0].numpy(), p[:, 1].numpy(), s=scatter_size(len(p)), c="tab:blue", alpha=0.6, lw=0)
        ax.set_xlim(*bounds[0])
        ax.set_ylim(*bounds[1])
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or "sampling path: noise (left) to data (right)", fontsize=10)
    return fig
