"""Datasets that ship with scikit-learn, so they load anywhere without a download.

- digits: 1,797 handwritten digits, 8x8 pixels with values 0..16 (UCI optdigits test set).
- iris, wine, breast_cancer (classification) and diabetes (regression) tables.
"""

from __future__ import annotations

import pandas as pd
import torch

from genlab.data.dataset import DataSpec, Dataset
from genlab.data.splits import seeded_splits
from genlab.data.tables import table_dataset


def load_digits(*, seed: int = 0) -> Dataset:
    """scikit-learn's digits as images: storage (1797, 1, 8, 8) float32 = pixel / 16 in [0, 1].

    Spec: kind "image", shape (1, 8, 8), levels 17 (pixel values 0..16), 10 classes "0".."9".
    Splits from `seeded_splits(1797, seed)`: train 1,437, val 180, test 180. The shipped feature
    extractor of `genlab.metrics` was trained on the seed-0 train split: keep this split as is.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images).float().div_(16.0).unsqueeze(1)  # (N, 8, 8) -> (N, 1, 8, 8)
    labels = torch.from_numpy(bunch.target).long()
    spec = DataSpec(
        name="digits",
        kind="image",
        shape=(1, 8, 8),
        value_range=(0.0, 1.0),
        num_classes=10,
        levels=17,
        class_names=tuple(str(k) for k in range(10)),
    )
    return Dataset(images, spec, labels, splits=seeded_splits(len(images), seed))


def _sklearn_frame(name: str) -> tuple[pd.DataFrame, str | None]:
    """The scikit-learn table `name` as one frame: features, then column "target"
    (categorical class names for classification tables, the number for diabetes)."""
    from sklearn import datasets

    if name == "diabetes":
        # scaled=False: the original units (age in years, sex 1/2, ...); the encoder standardises
        return datasets.load_diabetes(as_frame=True, scaled=False).frame, None
    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    frame["target"] = pd.Categorical.from_codes(bunch.target.to_numpy(), categories=list(bunch.target_names))
    return frame, "target"


TABLE_DESCRIPTIONS = {
    "iris": "table: 150 iris flowers, 4 measurements + species (3 classes)",
    "wine": "table: 178 wines, 13 chemical measurements + cultivar (3 classes)",
    "breast_cancer": "table: 569 tumours, 30 features + malignant/benign",
    "diabetes": "table: 442 patients, 10 baseline variables + disease progression (regression)",
}


def load_sklearn_table(name: str, *, seed: int = 0, numeric: str = "quantile") -> Dataset:
    """A scikit-learn table encoded by `TableEncoder(numeric=numeric)` (see
    `genlab.data.tables.table_dataset`): `frame` holds the features and "target"; labels are the
    class index (none for diabetes)."""
    frame, target = _sklearn_frame(name)
    return table_dataset(frame, name=name, target=target, seed=seed, numeric=numeric)
