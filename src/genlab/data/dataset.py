"""The in-memory dataset every loader returns, and the batch every model receives.

Data stays as tensors (images as uint8 when they came as 8-bit pixels) and batches are drawn by
indexing, so the training loop never walks samples one by one in Python.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from genlab.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

Kind = Literal["image", "vector", "table"]


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a model needs to know of its data.

    kind: "image" (shape (C, H, W)), "vector" (shape (D,)) or "table" (encoded to (D,)).
    value_range: the range of `Batch.x` values, e.g. (0, 1) for images.
    levels: number of discrete values per dimension before scaling (256 for 8-bit pixels,
        17 for scikit-learn's digits), or None for continuous data; used for dequantization
        and bits per dimension.
    table_blocks: tables: (column, role, start, stop) for each run of coordinates, role
        "continuous" or "categorical" (a one-hot block), as `TableEncoder.blocks`; None otherwise
        (and for table runs saved before it existed).
    target: tables: the column the labels come from, or None.
    rows: tables: the number of rows of the whole table (all splits), or None.
    """

    name: str
    kind: Kind
    shape: tuple[int, ...]
    value_range: tuple[float, float] = (0.0, 1.0)
    num_classes: int | None = None
    levels: int | None = None
    class_names: tuple[str, ...] | None = None
    table_blocks: tuple[tuple[str, str, int, int], ...] | None = None
    target: str | None = None
    rows: int | None = None

    @property
    def table_columns(self) -> list[str]:
        """A table's column names in the order of their blocks ([] for other data)."""
        return list(dict.fromkeys(b[0] for b in self.table_blocks or ()))

    @property
    def dim(self) -> int:
        out = 1
        for s in self.shape:
            out *= s
        return out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["value_range"] = list(self.value_range)
        if self.class_names is not None:
            d["class_names"] = list(self.class_names)
        if self.table_blocks is not None:
            d["table_blocks"] = [list(b) for b in self.table_blocks]
        else:
            d.pop("table_blocks")
        for key in ("target", "rows"):
            if d[key] is None:
                d.pop(key)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataSpec":
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        d["value_range"] = tuple(d["value_range"])
        if d.get("class_names") is not None:
            d["class_names"] = tuple(d["class_names"])
        if d.get("table_blocks") is not None:
            d["table_blocks"] = tuple(tuple(b) for b in d["table_blocks"])
        return cls(**d)


@dataclasses.dataclass
class Batch:
    """A batch: x (B, *spec.shape) float in spec.value_range; y (B,) long class labels or None."""

    x: Tensor
    y: Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(
            self.x.to(device, non_blocking=non_blocking),
            None if self.y is None else self.y.to(device, non_blocking=non_blocking),
        )

    def __len__(self) -> int:
        return self.x.shape[0]


class Dataset(torch.utils.data.Dataset):
    """Samples held as one tensor, with labels, a spec and seeded train/val/test splits.

    storage: (N, *spec.shape) tensor. uint8 storage is scaled to [0, 1] by `get_batch`;
    float storage is returned as is. `source` records how to load the data again
    (name or path plus options), so a trained run can find its data.
    """

    def __init__(
        self,
        storage: Tensor,
        spec: DataSpec,
        labels: Tensor | None = None,
        *,
        source: dict[str, Any] | None = None,
        splits: dict[str, Tensor] | None = None,
        frame: Any = None,
        encoder: Any = None,
        true_log_prob: Any = None,
    ) -> None:
        if storage.shape[1:] != torch.Size(spec.shape):
            raise DataError(f"dataset {spec.name!r}: samples have shape {tuple(storage.shape[1:])}, spec says {spec.shape}")
        if labels is not None and labels.shape[0] != storage.shape[0]:
            raise DataError(f"dataset {spec.name!r}: {storage.shape[0]} samples but {labels.shape[0]} labels")
        if storage.is_floating_point() and not torch.isfinite(storage).all():
            bad = (~torch.isfinite(storage.reshape(storage.shape[0], -1))).any(1).nonzero()[:5, 0].tolist()
            raise DataError(f"dataset {spec.name!r} has NaN or infinite values (first rows: {bad}); clean or drop them")
        self.storage = storage
        self.spec = spec
        self.labels = labels
        self.source = source or {"name": spec.name}
        self._splits = splits or {}
        self.frame = frame  # pandas DataFrame for tables
        self.encoder = encoder  # table encoder (frame <-> vectors)
        self.true_log_prob = true_log_prob  # callable x -> log p(x) where the density is known

    # -- size and access --------------------------------------------------------------
    def __len__(self) -> int:
        return self.storage.shape[0]

    def __getitem__(self, i: int) -> Batch:
        b = self.get_batch(torch.tensor([i]))
        return Batch(b.x[0], None if b.y is None else b.y[0])

    def to_float(self, storage: Tensor) -> Tensor:
        if storage.dtype == torch.uint8:
            return storage.float().div_(255.0)
        return storage.float()

    def get_batch(self, index: Tensor) -> Batch:
        """Gather samples by index: x (B, *shape) float, y (B,) or None."""
        x = self.to_float(self.storage[index])
        y = None if self.labels is None else self.labels[index]
        return Batch(x, y)

    def tensors(self) -> tuple[Tensor, Tensor | None]:
        """All samples as floats (N, *shape) and labels (N,) or None."""
        return self.to_float(self.storage), self.labels

    def decode_rows(self, x: Tensor) -> "pd.DataFrame":
        """Encoded rows (N, D), e.g. `model.sample(N)` of a model trained on this table, as a pandas
        DataFrame with the table's columns, dtypes and category labels (`TableEncoder.decode`:
        numbers clipped to the range seen in the table, categories by argmax). Tables only."""
        if self.encoder is None:
            raise DataError(f"dataset {self.spec.name!r} holds {self.spec.kind} data, not a table; only tables decode to rows")
        return self.encoder.decode(x)

    def subset(self, index: Tensor) -> "Dataset":
        return Dataset(
            self.storage[index],
            self.spec,
            None if self.labels is None else self.labels[index],
            source=self.source,
            frame=None if self.frame is None else self.frame.iloc[index.numpy()].reset_index(drop=True),
            encoder=self.encoder,
            true_log_prob=self.true_log_prob,
        )

    # -- splits -----------------------------------------------------------------------
    def split(self, name: str) -> "Dataset":
        """The 'train', 'val' or 'test' part. Without recorded splits, all data is 'train'."""
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r}; use 'train', 'val' or 'test'")
        if not self._splits:
            if name == "train":
                return self
            raise DataError(f"dataset {self.spec.name!r} has no {name!r} split")
        if name not in self._splits:
            raise DataError(f"dataset {self.spec.name!r} has no {name!r} split; it has {', '.join(self._splits)}")
        return self.subset(self._splits[name])

    @property
    def split_names(self) -> list[str]:
        return list(self._splits) or ["train"]

    @property
    def train(self) -> "Dataset":
        return self.split("train")

    @property
    def val(self) -> "Dataset":
        return self.split("val")

    @property
    def test(self) -> "Dataset":
        return self.split("test")

    def __repr__(self) -> str:
        sizes = {k: len(v) for k, v in self._splits.items()} or {"all": len(self)}
        return f"Dataset({self.spec.name!r}, kind={self.spec.kind}, shape={self.spec.shape}, splits={sizes})"
