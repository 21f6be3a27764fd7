"""Plumbing shared by the pictures: atomic file writes, headless figures, finite rows, view bounds.

Figures are built with `matplotlib.figure.Figure` on an Agg canvas, never through pyplot, so
drawing works without a display, from threads, and leaves the user's pyplot state alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from genlab.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100  # pixels per inch of every saved figure, so a figsize in inches fixes the PNG size


def new_figure(width: float, height: float) -> "Figure":
    """A figure of `width` x `height` inches (at `DPI`) on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: "Figure", path: str | os.PathLike) -> Path:
    """Render `fig` to a PNG at `path`, atomically. The size is the figure's, not cropped."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))


def as_points(x: Tensor | None, name: str) -> Tensor | None:
    """A detached float CPU copy of `x` as (N, D) (a (N,) tensor becomes (N, 1))."""
    if x is None:
        return None
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    x = x.detach().to("cpu", torch.float32)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(x.shape)}")
    return x


def finite_rows(x: Tensor) -> tuple[Tensor, int]:
    """The rows of `x` (N, D) with every value finite, and how many rows were dropped."""
    keep = torch.isfinite(x).all(dim=1)
    return x[keep], int((~keep).sum())


def thin(x: Tensor, max_points: int) -> Tensor:
    """At most `max_points` rows of `x`, evenly strided (deterministic), so scatters stay fast."""
    if x.shape[0] <= max_points:
        return x
    return x[torch.linspace(0, x.shape[0] - 1, max_points).long()]


def view_bounds(x: Tensor, margin: float = 0.1) -> list[tuple[float, float]]:
    """Per-dimension (low, high) covering the finite rows of `x` (N, D), widened by `margin` of
    the span on each side. Quantiles 0.001 / 0.999 rather than min / max, so a few wild samples
    from a diverging model do not shrink everything else to a dot."""
    x, _ = finite_rows(x)
    if x.shape[0] == 0:
        return [(-1.0, 1.0)] * x.shape[1]
    q = torch.quantile(x.double(), torch.tensor([0.001, 0.999], dtype=torch.float64), dim=0)
    out = []
    for lo, hi in q.T.tolist():
        span = hi - lo
        if span <= 1e-12:  # a constant dimension: a unit window around it
            lo, hi, span = lo - 0.5, hi + 0.5, 1.0
        out.append((lo - margin * span, hi + margin * span))
    return out


def nonfinite_note(counts: dict[str, int]) -> str:
    """'3 of the samples rows non-finite, not drawn'-style note, or '' when all are finite."""
    parts = [f"{n} {what} rows" for what, n in counts.items() if n]
    return f"non-finite, not drawn: {', '.join(parts)}" if parts else ""


def set_heading(fig: "Figure", title: str | None, counts: dict[str, int], fontsize: float = 11) -> None:
    """The figure's title, with the non-finite note under it in red when rows were dropped."""
    note = nonfinite_note(counts)
    heading = "\n".join(t for t in (title, note) if t)
    if heading:
        fig.suptitle(heading, fontsize=fontsize, color="tab:red" if note else "black")


def scatter_size(n: int) -> float:
    """Marker area for a scatter of n points: big for a few, small for many."""
    return float(min(12.0, max(0.5, 4000.0 / max(n, 1))))
