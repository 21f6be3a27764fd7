"""Training curves from the engine's metrics log: one panel per logged number."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genlab.files import read_jsonl
from genlab.viz._common import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

X_KEY = "step"
# counters and clocks, not quantities to watch
SKIP_KEYS = {"step", "epoch", "time", "timestamp", "wall_time", "elapsed", "elapsed_s", "time_s"}
PANEL_SIZE = (4.0, 3.0)
MAX_COLUMNS = 3

Series = dict[str, tuple[list[float], list[float]]]  # split -> (steps, values)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file (one JSON object a line; see `genlab.files.read_jsonl`)."""
    return read_jsonl(path)


def _is_time_like(key: str) -> bool:
    return key in SKIP_KEYS or key.endswith("_time") or key.startswith("time_")


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def collect_series(rows: Iterable[dict[str, Any]], keys: Sequence[str] | None = None) -> dict[str, Series]:
    """Group logged numbers by key, then by split: {key: {split: (steps, values)}}.

    x is the row's "step" (or its position among rows of its split when absent); the split is
    the row's "split" (default "train"). Non-numeric and non-finite values are skipped. Without
    `keys`, every numeric key but step- and time-like ones, "loss" first, then in order of first
    appearance with "lr" and throughputs ("*_per_s") last.
    """
    series: dict[str, Series] = {}
    seen_per_split: dict[str, int] = {}
    for row in rows:
        split = str(row.get("split", "train"))
        position = seen_per_split.get(split, 0)
        seen_per_split[split] = position + 1
        x = _number(row.get(X_KEY))
        x = float(position) if x is None else x
        for key, value in row.items():
            v = _number(value)
            if v is None or key == X_KEY:
                continue
            steps, values = series.setdefault(key, {}).setdefault(split, ([], []))
            steps.append(x)
            values.append(v)
    if keys is not None:
        missing = [k for k in keys if k not in series]
        if missing:
            raise ValueError(f"no numeric values logged for {missing}; logged keys: {sorted(series) or 'none'}")
        return {k: series[k] for k in keys}
    series = {k: v for k, v in series.items() if not _is_time_like(k)}

    def rank(key: str) -> int:
        return 0 if key == "loss" else 2 if key == "lr" or key.endswith("_per_s") else 1

    # sorted is stable: within a rank, keys keep their order of first appearance
    return {k: series[k] for k in sorted(series, key=rank)}


def _log_scale(series: Series) -> bool:
    """Log scale only when every value is positive and they span more than two decades."""
    values = [v for _, vs in series.values() for v in vs]
    return bool(values) and min(values) > 0 and max(values) / min(values) > 100.0


def curves_figure(
    metrics: list[dict[str, Any]] | str | os.PathLike,
    *,
    keys: Sequence[str] | None = None,
) -> "Figure":
    """The figure of `plot_training_curves`, returned instead of saved. One panel per key, up to
    MAX_COLUMNS panels a row; in each, one line per split (train, val, ...)."""
    rows = read_metrics(metrics) if isinstance(metrics, (str, os.PathLike)) else list(metrics)
    series = collect_series(rows, keys)
    ncols = max(1, min(MAX_COLUMNS, len(series)))
    nrows = max(1, math.ceil(len(series) / ncols))
    fig = new_figure(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).reshape(-1)
    if not series:
        axes[0].text(0.5, 0.5, "no metrics logged yet", ha="center", va="center", transform=axes[0].transAxes)
    for ax, (key, by_split) in zip(axes, series.items()):
        for split, (steps, values) in by_split.items():
            few = len(values) < 30  # sparse evaluations read better with markers
            ax.plot(steps, values, label=split, marker="o" if few else None, markersize=3, lw=1.2)
        if _log_scale(by_split):
            ax.set_yscale("log")
        ax.set_title(key, fontsize=10)
        ax.set_xlabel(X_KEY)
        ax.grid(alpha=0.3)
        if len(by_split) > 1:
            ax.legend(fontsize=8)
    for ax in axes[max(len(series), 1):]:
        ax.set_visible(False)
    return fig


def plot_training_curves(
    metrics: list[dict[str, Any]] | str | os.PathLike,
    path: str | os.PathLike,
    *,
    keys: Sequence[str] | None = None,
) -> Path:
    """Save the training curves as a PNG: one panel per loss term (and lr, throughput), x = step.

    metrics: rows like {"step": 10, "loss": 1.2, "kl": 0.2, "lr": 1e-3, "split": "train"}, or the
    path of a metrics.jsonl holding one such row a line. Rows with split "val" are drawn as a
    second line on the same panel. keys: which numbers to draw (default: all but step- and
    time-like ones). A panel uses a log scale where all its values are positive and span more
    than two decades. Written atomically.
    """
    return save_figure(curves_figure(metrics, keys=keys), path)
