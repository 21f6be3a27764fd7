"""Reading data the way a trained run reads it, for the commands that apply a run to new data
(`genlab anomaly`, `genlab encode`): a table through the run's own encoder, images with the run's
resize, crop and grey levels, and a name, a label and a split for each sample where the data has them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from genlab.errors import ConfigError, DataError
from genlab.models.base import GenerativeModel

__all__ = ["IMAGE_READING", "RunSamples", "read_samples"]

IMAGE_READING = ("resize", "crop", "grayscale")  # the image options a command takes from the run


@dataclasses.dataclass(frozen=True)
class RunSamples:
    """x (N, *shape) as the run's model reads it; names: one per sample (a file inside an image folder
    or archive, a table's row number from 1, else the index from 0); labels (N,) where the data has
    them (a named dataset's or an image folder's classes, a table's `label_column`), else None;
    class_names of integer labels where known; split: each sample's 'train', 'val' or 'test' where
    the data has seeded splits (a table read from a CSV has none), else None."""

    x: Tensor
    names: list[str]
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None
    split: np.ndarray | None = None


def _splits(dataset, n: int) -> np.ndarray | None:
    if not dataset._splits:
        return None
    split = np.full(n, "", dtype="<U5")
    for name, index in dataset._splits.items():
        split[index.numpy()] = name
    return split


def read_samples(run_dir: str | os.PathLike, data: str | os.PathLike, model: GenerativeModel,
                 data_options: dict[str, Any] | None = None, exclude: str | os.PathLike | None = None,
                 label_column: str | None = None) -> RunSamples:
    """The samples of `data` in their own order, as the run's model reads them (`RunSamples`): for a
    table run, a CSV (or a named table) encoded by the run's encoder; otherwise
    `genlab.data.load(data, **data_options)`, an image run's resize, crop and grayscale options
    where data_options do not set them. `exclude`: a column of a CSV left out (the known anomalies
    of `genlab anomaly --truth`); `label_column`: a table's column returned as the labels (it stays
    among the encoded columns where the run was trained with it)."""
    import pandas as pd

    from genlab.data.catalog import load
    from genlab.data.images import image_names, is_archive

    options = dict(data_options or {})
    if model.spec.kind == "table":
        from genlab.train.run import read_table_encoder

        path = Path(data)
        split = None
        if path.is_file():
            sep = options.pop("sep", None) or ("\t" if path.suffix.lower() == ".tsv" else ",")
            try:
                frame = pd.read_csv(path, sep=sep)
            except (ValueError, OSError) as err:
                raise DataError(f"cannot read '{path}' as a CSV table: {err}") from None
            frame = frame.drop(columns=[str(exclude)], errors="ignore") if exclude is not None else frame
        else:
            dataset = load(data, **options)  # a named table, e.g. breast_cancer
            frame = dataset.frame
            if frame is None:
                raise ConfigError(f"--data {data}: a table run reads the rows of a table (a CSV, or a named table)")
            split = _splits(dataset, len(frame))
        labels = None
        if label_column is not None:
            if label_column not in frame.columns:
                raise ConfigError(f"--label-column {label_column!r} is not a column of {Path(str(data)).name}; "
                                  f"it has {', '.join(map(str, frame.columns))}")
            labels = frame[label_column].to_numpy()
            labels = labels if np.issubdtype(labels.dtype, np.number) else labels.astype(str)
        x = read_table_encoder(run_dir).encode(frame)
        return RunSamples(x, [str(i + 1) for i in range(len(frame))], labels, None, split)
    if label_column is not None:
        raise ConfigError(f"--label-column names a table's column; {model.spec.name!r} is {model.spec.kind} data, "
                          "whose labels come with it (a named dataset's or an image folder's classes)")
    if model.spec.kind == "image":  # read as the run's images were: its resize, crop and grey levels
        from genlab.train.run import read_run_config, run_data_source

        trained = run_data_source(read_run_config(run_dir))
        options = {k: trained[k] for k in IMAGE_READING if k in trained} | options
    dataset = load(data, **options)
    x, labels = dataset.tensors()
    path = Path(data)
    folder = path.is_dir() or (path.is_file() and is_archive(path))  # not an .npz or an idx file of images
    names = image_names(path) if dataset.spec.kind == "image" and folder else [str(i) for i in range(len(x))]
    if len(names) != len(x):
        names = [str(i) for i in range(len(x))]
    return RunSamples(x, names, None if labels is None else labels.numpy(), dataset.spec.class_names,
                      _splits(dataset, len(x)))
