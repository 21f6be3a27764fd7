"""Pictures of a synthetic table beside the real one: per-column histograms and the pair-trend
differences as a heat map (the report `genlab eval` writes for a table run)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from genlab.data.tables import DISCRETE_KINDS as DISCRETE
from genlab.viz._common import new_figure, save_figure

MAX_LEVELS = 20  # bars shown for a discrete column; the rest are summed as "other"
PANEL = (3.2, 2.4)


def _numbers(series: pd.Series, kind: str) -> np.ndarray:
    if kind == "datetime":
        stamps = pd.to_datetime(series, errors="coerce", format="ISO8601")
        return stamps.dropna().to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(float)
    return pd.to_numeric(series, errors="coerce").dropna().to_numpy(dtype=float)


def column_histograms(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str],
                      path: str | os.PathLike, *, columns_per_row: int = 4) -> Path:
    """One panel per column: overlaid density histograms (numbers, on the real table's bins) or
    side-by-side bars of category shares (the real table's most frequent MAX_LEVELS levels);
    each title gives the missing-value rates, real / synthetic."""
    names = list(kinds)
    cols = min(columns_per_row, len(names))
    rows = math.ceil(len(names) / cols)
    fig = new_figure(PANEL[0] * cols, PANEL[1] * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, name in zip(axes, names):
        kind = kinds[name]
        r, s = real[name], synthetic[name]
        if kind in DISCRETE:
            shares_r = r.astype(object).dropna().value_counts(normalize=True)
            shares_s = s.astype(object).dropna().value_counts(normalize=True)
            levels = list(shares_r.index[:MAX_LEVELS])
            x = np.arange(len(levels))
            ax.bar(x - 0.2, shares_r.reindex(levels, fill_value=0), width=0.4, label="real")
            ax.bar(x + 0.2, shares_s.reindex(levels, fill_value=0), width=0.4, label="synthetic")
            ax.set_xticks(x, [str(v)[:10] for v in levels], rotation=60, fontsize=6)
        else:
            vr, vs = _numbers(r, kind), _numbers(s, kind)
            edges = np.histogram_bin_edges(vr, bins=30) if len(vr) else 30
            ax.hist(vr, bins=edges, density=True, alpha=0.5, label="real")
            ax.hist(np.clip(vs, edges[0], edges[-1]) if len(vr) else vs, bins=edges, density=True, alpha=0.5, label="synthetic")
            ax.tick_params(labelsize=6)
        ax.set_title(f"{name} (missing {r.isna().mean():.0%} / {s.isna().mean():.0%})", fontsize=8)
    for ax in axes[len(names):]:
        ax.axis("off")
    axes[0].legend(fontsize=6)
    return save_figure(fig, path)


def pair_trend_heatmap(pairs: pd.DataFrame, columns: list[str], path: str | os.PathLike) -> Path:
    """The matrix of 1 - pair score (0: the pair's correlation or contingency table is reproduced;
    `genlab.metrics.tabular.pair_trends` rows), every pair, symmetric, diagonal blank."""
    index = {c: i for i, c in enumerate(columns)}
    gap = np.full((len(columns), len(columns)), np.nan)
    for row in pairs.itertuples():
        i, j = index[row.column_1], index[row.column_2]
        gap[i, j] = gap[j, i] = 1.0 - row.score
    size = 1.0 + 0.45 * len(columns)
    fig = new_figure(size + 1.0, size)
    ax = fig.subplots()
    image = ax.imshow(gap, vmin=0.0, vmax=max(0.2, float(np.nanmax(gap)) if np.isfinite(gap).any() else 0.2), cmap="magma_r")
    ax.set_xticks(range(len(columns)), [str(c)[:12] for c in columns], rotation=60, fontsize=7)
    ax.set_yticks(range(len(columns)), [str(c)[:12] for c in columns], fontsize=7)
    ax.set_title("1 - pair trend score (real vs synthetic)", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return save_figure(fig, path)
