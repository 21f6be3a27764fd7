"""Pictures of an anomaly detector's scores: the score histograms of normal and tested data, the
most and least anomalous images beside their per-pixel score maps, and the ROC curve when the
truth is known. Inputs are plain tensors; `genlab.apps.anomaly.score_data` draws them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genlab.viz._common import new_figure, save_figure


def score_histogram_figure(normal: Tensor, tested: Tensor, threshold: float, *, score: str = "score",
                           tested_truth: Tensor | None = None):
    """Histograms of the normal samples' scores (N,) and the tested samples' (M,) on shared bins,
    the threshold as a vertical line; with tested_truth (M,) 0/1 the tested are split into their
    normal and anomalous samples."""
    fig = new_figure(6.4, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    finite = torch.cat([normal, tested]).double()
    finite = finite[torch.isfinite(finite)]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    bins = np.linspace(low, high if high > low else low + 1.0, 50)
    ax.hist(normal.double().numpy(), bins=bins, density=True, alpha=0.5, color="tab:blue", label=f"normal ({len(normal)})")
    if tested_truth is None:
        ax.hist(tested.double().numpy(), bins=bins, density=True, alpha=0.5, color="tab:orange", label=f"tested ({len(tested)})")
    else:
        truth = tested_truth.bool()
        for part, colour, name in ((~truth, "tab:green", "tested, normal"), (truth, "tab:red", "tested, anomalous")):
            if part.any():
                ax.hist(tested[part].double().numpy(), bins=bins, density=True, alpha=0.5, color=colour,
                        label=f"{name} ({int(part.sum())})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_xlabel(f"{score} (higher = more anomalous)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return fig


def plot_score_histogram(normal: Tensor, tested: Tensor, threshold: float, path: str | os.PathLike, **options) -> Path:
    return save_figure(score_histogram_figure(normal, tested, threshold, **options), path)


def extremes_figure(images: Tensor, scores: Tensor, maps: Tensor | None, names: list[str], *, k: int = 8,
                    value_range: tuple[float, float] = (0.0, 1.0), map_name: str | None = None):
    """The k most anomalous images (top rows) and the k least (bottom rows), each titled with its name
    and score, with its per-pixel map (summed over channels, one colour scale for all; map_name
    labels it) under it where `maps` is given. images, maps: (N, C, H, W); scores: (N,)."""
    order = torch.argsort(scores, descending=True)
    k = min(k, len(scores))
    groups = (("most anomalous", order[:k]), ("least anomalous", order.flip(0)[:k]))
    rows_per_group = 2 if maps is not None else 1
    fig = new_figure(1.3 * k + 0.6, 1.55 * rows_per_group * 2 + 0.5)
    low, high = value_range
    heat_max = float(maps.sum(1).amax()) if maps is not None and len(maps) else 1.0
    for g, (title, index) in enumerate(groups):
        for j, i in enumerate(index.tolist()):
            ax = fig.add_subplot(2 * rows_per_group, k, g * rows_per_group * k + j + 1)
            picture = ((images[i].float() - low) / (high - low)).clamp(0, 1).permute(1, 2, 0).numpy()
            ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{names[i][-14:]}\n{float(scores[i]):.3g}", fontsize=7)
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(title, fontsize=8)
            if maps is not None:
                ax = fig.add_subplot(2 * rows_per_group, k, (g * rows_per_group + 1) * k + j + 1)
                ax.imshow(maps[i].float().sum(0).numpy(), cmap="inferno", vmin=0, vmax=heat_max if heat_max > 0 else None)
                ax.set_xticks([]), ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(f"{map_name or 'score'} map", fontsize=8)
    return fig


def plot_extremes(images: Tensor, scores: Tensor, maps: Tensor | None, names: list[str], path: str | os.PathLike, **options) -> Path:
    return save_figure(extremes_figure(images, scores, maps, names, **options), path)


def roc_figure(scores: Tensor, truth: Tensor, *, score: str = "score"):
    """The ROC curve of scores (N,) against truth (N,) 0/1 (1 = anomalous), with its area (AUROC)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    false_positive, true_positive, _ = roc_curve(truth.numpy(), scores.double().numpy())
    area = roc_auc_score(truth.numpy(), scores.double().numpy())
    fig = new_figure(4.2, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(false_positive, true_positive, color="tab:red", label=f"{score}: AUROC {area:.3f}")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="chance")
    ax.set_xlabel("false-positive rate (normal flagged)")
    ax.set_ylabel("true-positive rate (anomalies found)")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_roc(scores: Tensor, truth: Tensor, path: str | os.PathLike, **options) -> Path:
    return save_figure(roc_figure(scores, truth, **options), path)
