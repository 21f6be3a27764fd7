"""One call that draws samples the way their kind of data is best seen."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from genlab.data.dataset import DataSpec
from genlab.viz.density import LogProb, plot_density_2d
from genlab.viz.grid import save_image_grid
from genlab.viz.pairs import plot_pairwise


def plot_samples(
    samples: Tensor,
    spec: DataSpec,
    path: str | os.PathLike,
    *,
    data: Any = None,
    log_prob: LogProb | None = None,
    true_log_prob: LogProb | None = None,
    title: str | None = None,
    **kw: Any,
) -> Path:
    """Save a picture of samples (N, *spec.shape) chosen by `spec.kind`, and return its path.

    - "image": `save_image_grid` over `spec.value_range` (data, densities and title unused);
    - "vector" with dim 2: `plot_density_2d`, with the data, model and true densities if given;
    - other vectors and tables: `plot_pairwise` of the first dimensions, samples over data.

    data: (M, *spec.shape) tensor, or a `genlab.data.Dataset` (whose `true_log_prob` is then
    used when none is passed). kw go to the function chosen above (e.g. nrow, upscale,
    resolution, bounds, max_dims). Meant to be called by the training engine at intervals:
    NaN or infinite samples are drawn where finite and counted in the title, never raised on.
    """
    if hasattr(data, "tensors"):  # a Dataset
        true_log_prob = true_log_prob if true_log_prob is not None else getattr(data, "true_log_prob", None)
        data = data.tensors()[0]
    n = samples.shape[0]
    if spec.kind == "image":
        return save_image_grid(samples.reshape(n, *spec.shape), path, value_range=spec.value_range, **kw)
    flat = samples.reshape(n, spec.dim)
    data = None if data is None else data.reshape(data.shape[0], spec.dim)
    if spec.kind == "vector" and spec.dim == 2:
        return plot_density_2d(flat, path, log_prob=log_prob, true_log_prob=true_log_prob, data=data, title=title, **kw)
    return plot_pairwise(flat, path, data=data, title=title, **kw)
