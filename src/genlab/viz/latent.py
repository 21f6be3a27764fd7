"""Pictures of latent spaces: a 2-D map of codes coloured by label, and rate-distortion curves.

The data for both come from `genlab.apps.latent` (`latent_map`, `rate_distortion`); these functions
only draw. Each `plot_*` saves a PNG and returns its path; each `*_figure` returns the figure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from genlab.viz._common import as_points, finite_rows, new_figure, save_figure, scatter_size, set_heading, view_bounds

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["latent_map_figure", "plot_latent_map", "plot_rate_distortion", "rate_distortion_figure"]

PANEL_INCHES = 5.0


def latent_map_figure(
    coords: Tensor,
    labels: Tensor | None = None,
    *,
    class_names: Sequence[str] | None = None,
    axis_labels: tuple[str, str] = ("z1", "z2"),
    title: str | None = None,
) -> "Figure":
    """A scatter of 2-D codes coords (N, 2), coloured by integer labels (N,) with a legend of
    class_names (or the label numbers); one colour when labels is None."""
    points = as_points(coords, "coords")
    if points.shape[1] != 2:
        raise ValueError(f"a latent map draws 2-D coordinates; got coords of shape {tuple(points.shape)} (project them first)")
    keep = torch.isfinite(points).all(1)
    dropped = int((~keep).sum())
    points = points[keep]
    fig = new_figure(PANEL_INCHES + (1.2 if labels is not None else 0.0), PANEL_INCHES)
    ax = fig.add_subplot(1, 1, 1)
    size = scatter_size(points.shape[0])
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, color="tab:blue", linewidths=0)
    else:
        label_values = torch.as_tensor(labels).detach().cpu().long()[keep]
        classes = sorted(set(label_values.tolist()))
        cmap = _class_colours(len(classes))
        for i, c in enumerate(classes):
            chosen = label_values == c
            name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
            ax.scatter(points[chosen, 0], points[chosen, 1], s=max(size, 3.0), color=cmap[i], linewidths=0, label=name)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, frameon=False, fontsize=9)
    if points.shape[0]:
        (x0, x1), (y0, y1) = view_bounds(finite_rows(points)[0], margin=0.05)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    set_heading(fig, title, {"code": dropped})
    return fig


def plot_latent_map(coords: Tensor, labels: Tensor | None, path: str | os.PathLike, **options: Any) -> Path:
    """Save `latent_map_figure(coords, labels, **options)` as a PNG at `path`."""
    return save_figure(latent_map_figure(coords, labels, **options), path)


def rate_distortion_figure(points: Sequence[Any], *, title: str | None = "rate vs distortion") -> "Figure":
    """Distortion (mean squared error per dimension) against rate (bits per image), one line and
    marker style per `method` of the points (objects with .method, .bits_per_image, .mse)."""
    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    methods: dict[str, list[Any]] = {}
    for p in points:
        methods.setdefault(p.method, []).append(p)
    for method, group in methods.items():
        group = sorted(group, key=lambda p: p.bits_per_image)
        ax.plot([p.bits_per_image for p in group], [p.mse for p in group], marker="o", label=method)
    ax.set_xlabel("rate (bits per image)")
    ax.set_ylabel("distortion (MSE per dimension)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if methods:
        ax.legend(fontsize=8)
    set_heading(fig, title, {})
    return fig


def plot_rate_distortion(points: Sequence[Any], path: str | os.PathLike, **options: Any) -> Path:
    """Save `rate_distortion_figure(points, **options)` as a PNG at `path`."""
    return save_figure(rate_distortion_figure(points, **options), path)


def _class_colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]
