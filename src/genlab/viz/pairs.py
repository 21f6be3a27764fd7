"""Pairwise scatter plots for vectors and encoded tables of more than two dimensions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
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

MAX_SCATTER = 2000
CELL_INCHES = 2.5


def pairwise_figure(
    samples: Tensor,
    *,
    data: Tensor | None = None,
    max_dims: int = 4,
    names: list[str] | None = None,
    title: str | None = None,
) -> "Figure":
    """The figure of `plot_pairwise`, returned instead of saved."""
    pts, dat = as_points(samples, "samples"), as_points(data, "data")
    if dat is not None and dat.shape[1] != pts.shape[1]:
        raise ValueError(f"samples have {pts.shape[1]} dimensions but data have {dat.shape[1]}")
    d = min(max_dims, pts.shape[1])
    pts, bad_samples = finite_rows(pts[:, :d])
    bad_data = 0
    if dat is not None:
        dat, bad_data = finite_rows(dat[:, :d])
    box = view_bounds(dat if dat is not None and len(dat) else pts)
    names = names or [f"x[{i}]" for i in range(d)]
    layers = [(pts, "tab:blue", "samples")]
    if dat is not None:
        layers.insert(0, (dat, "tab:gray", "data"))  # drawn first, under the samples

    fig = new_figure(CELL_INCHES * d, CELL_INCHES * d)
    axes = fig.subplots(d, d, squeeze=False)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if i == j:  # the marginal of dimension i
                bins = np.linspace(*box[i], 31)
                for x, color, label in layers:
                    values = x[:, i].numpy()
                    if not ((values >= bins[0]) & (values <= bins[-1])).any():  # density=True would divide by zero
                        continue
                    ax.hist(values, bins=bins, density=True, color=color, alpha=0.5, label=label)
            else:  # dimension j across, dimension i up
                for x, color, label in layers:
                    x = thin(x, MAX_SCATTER)
                    size = scatter_size(len(x)) / 2
                    ax.scatter(x[:, j].numpy(), x[:, i].numpy(), s=size, c=color, alpha=0.5, lw=0)
                ax.set_ylim(*box[i])
            ax.set_xlim(*box[j])
            ax.tick_params(labelsize=7)
            if i == d - 1:
                ax.set_xlabel(names[j], fontsize=8)
            if j == 0 and i != j:
                ax.set_ylabel(names[i], fontsize=8)
    if len(layers) > 1:
        axes[0, 0].legend(fontsize=7)
    set_heading(fig, title, {"sample": bad_samples, "data": bad_data}, fontsize=10)
    return fig


def plot_pairwise(
    samples: Tensor,
    path: str | os.PathLike,
    *,
    data: Tensor | None = None,
    max_dims: int = 4,
    names: list[str] | None = None,
    title: str | None = None,
) -> Path:
    """Save a pairs plot of the first `max_dims` dimensions of samples (N, D) as a PNG:
    histograms on the diagonal, scatters off it, data (M, D) in grey under the samples in blue
    when given. Axis limits follow the data (or the samples without data). Non-finite rows are
    left out and counted in the title. Written atomically."""
    return save_figure(pairwise_figure(samples, data=data, max_dims=max_dims, names=names, title=title), path)
