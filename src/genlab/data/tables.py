"""Tables: a reversible encoder between DataFrames and float vectors, and table datasets.

`TableEncoder` maps each row of a DataFrame to one vector:

- a numeric column c becomes one coordinate (x_c - mean_c) / std_c (population std; a constant
  column keeps std 1);
- a categorical column (category, object/string or bool dtype) with categories (k_1..k_m)
  becomes a one-hot block of m coordinates.

`decode` inverts it: de-standardise numeric coordinates, clip them to the [min, max] the column
held when the encoder was fitted (rounded back for integer columns), and take the argmax of each
one-hot block, so a model's continuous output decodes to valid rows. `to_dict`/`from_dict` keep an
encoder as JSON: a trained run keeps its table's in table_encoder.json (`genlab.train.read_table_encoder`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from genlab.data.dataset import DataSpec, Dataset
from genlab.data.splits import seeded_splits
from genlab.errors import DataError

# Encoded tables get value_range (-5, 5), widened to whole numbers that cover the data when some
# standardised value lies further out (long-tailed columns reach 10 or more std).
TABLE_VALUE_RANGE = (-5.0, 5.0)


@dataclasses.dataclass(frozen=True)
class ColumnInfo:
    """Where a column lives in the encoded vector, and how to map it back.

    kind "numeric": coordinate `start` holds (x - mean) / std; decoded values are clipped to
    [minimum, maximum] (the values seen when fitted; None: not clipped) and `integer` columns rounded.
    kind "categorical": coordinates start..stop-1 are one-hot over `categories`.
    dtype: the column's pandas dtype as a string ("int64", "float64", "category", "object", "bool").
    """

    name: str
    kind: Literal["numeric", "categorical"]
    start: int
    stop: int
    dtype: str
    mean: float | None = None
    std: float | None = None
    integer: bool = False
    categories: tuple[Any, ...] | None = None
    ordered: bool = False
    minimum: float | None = None
    maximum: float | None = None

    @property
    def width(self) -> int:
        return self.stop - self.start


def find_missing(frame: pd.DataFrame, where: str) -> None:
    """Raise DataError naming the columns and counting the rows with NaN or infinite values."""
    bad = frame.isna()
    numeric = frame.select_dtypes(include="number")
    if not numeric.empty:
        bad[numeric.columns] |= ~np.isfinite(numeric.to_numpy(dtype=float))
    if bad.to_numpy().any():
        columns = [str(c) for c in frame.columns[bad.any(axis=0).to_numpy()]]
        rows = int(bad.any(axis=1).sum())
        shown = ", ".join(columns[:10]) + (", ..." if len(columns) > 10 else "")
        raise DataError(
            f"{where} has missing or infinite values in {len(columns)} column(s) ({shown}), "
            f"{rows} of {len(frame)} rows; drop those rows (frame.dropna()) or fill them (frame.fillna(...)) first"
        )


def _is_categorical(series: pd.Series) -> bool:
    return (
        isinstance(series.dtype, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(series.dtype)
        or not pd.api.types.is_numeric_dtype(series.dtype)
    )


# What a column holds, in the words users and SDMetrics' metadata use: the encoder and the tabular
# metrics read it. continuous and integer are numbers (integers are rounded when decoded);
# categorical, ordinal (ordered categories) and boolean are discrete; datetime is a time stamp.
COLUMN_KINDS = ("continuous", "integer", "categorical", "ordinal", "boolean", "datetime")
DISCRETE_KINDS = ("categorical", "ordinal", "boolean")


def infer_column_kind(series: pd.Series) -> str:
    """The kind (a name in COLUMN_KINDS) of a column from its dtype and values, missing values ignored:

    bool dtype, or only True/False values -> "boolean"; datetime64 dtype, or text that all parses
    as ISO dates -> "datetime"; an ordered category dtype -> "ordinal"; other categories and text
    -> "categorical"; integer dtype, or floats that are all whole numbers (an integer column with
    NaNs reads as float) -> "integer"; other numbers -> "continuous".

    >>> infer_column_kind(pd.Series([1.0, float("nan"), 3.0])), infer_column_kind(pd.Series(["2020-01-05", None]))
    ('integer', 'datetime')
    """
    dtype = series.dtype
    values = series.dropna()
    if pd.api.types.is_bool_dtype(dtype) or (dtype == object and len(values) and values.map(type).isin([bool, np.bool_]).all()):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if isinstance(dtype, pd.CategoricalDtype):
        return "ordinal" if dtype.ordered else "categorical"
    if not pd.api.types.is_numeric_dtype(dtype):
        text = values.astype(str)
        if len(text) and text.str.match(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$").all():
            try:
                pd.to_datetime(text, format="ISO8601")
                return "datetime"
            except (ValueError, TypeError):
                pass
        return "categorical"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    numbers = values.to_numpy(dtype=np.float64)
    finite = numbers[np.isfinite(numbers)]
    return "integer" if len(finite) and (finite == np.round(finite)).all() and np.abs(finite).max() < 2**53 else "continuous"


def column_kinds(frame: pd.DataFrame, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """{column name: kind} for every column of `frame`, inferred (`infer_column_kind`) except
    where `overrides` names the kind; an unknown column or kind raises DataError with the choices."""
    overrides = dict(overrides or {})
    names = [str(c) for c in frame.columns]
    for name, kind in overrides.items():
        if name not in names:
            raise DataError(f"no column {name!r} to set the kind of; columns are {', '.join(names)}")
        if kind not in COLUMN_KINDS:
            raise DataError(f"column {name!r}: unknown kind {kind!r}; choose one of {', '.join(COLUMN_KINDS)}")
    return {name: overrides.get(name) or infer_column_kind(frame[column]) for name, column in zip(names, frame.columns)}


def _sorted_unique(series: pd.Series) -> tuple[Any, ...]:
    values = pd.unique(series)
    try:
        return tuple(sorted(values))
    except TypeError:  # mixed types: order by their text
        return tuple(sorted(values, key=str))


class TableEncoder:
    """Standardise numeric columns and one-hot encode categorical ones; decode back to a frame.

    >>> frame = pd.DataFrame({"size": [1.0, 2.0, 3.0], "colour": ["red", "blue", "red"]})
    >>> enc = TableEncoder().fit(frame)
    >>> enc.dim, [c.kind for c in enc.columns]
    (3, ['numeric', 'categorical'])
    >>> enc.decode(enc.encode(frame, dtype=torch.float64)).equals(frame)
    True
    """

    def __init__(self) -> None:
        self.columns: list[ColumnInfo] = []

    @property
    def dim(self) -> int:
        """D, the length of an encoded row."""
        return self.columns[-1].stop if self.columns else 0

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnInfo:
        for c in self.columns:
            if c.name == name:
                return c
        raise DataError(f"no column {name!r}; columns are {', '.join(map(str, self.column_names))}")

    def fit(self, frame: pd.DataFrame) -> "TableEncoder":
        """Learn means and stds of numeric columns and the categories of the others."""
        if len(frame) == 0 or frame.shape[1] == 0:
            raise DataError("cannot fit a table encoder on an empty table")
        find_missing(frame, "the table")
        columns, start = [], 0
        for name in frame.columns:
            series = frame[name]
            if _is_categorical(series):
                if isinstance(series.dtype, pd.CategoricalDtype):
                    categories, ordered = tuple(series.cat.categories), bool(series.cat.ordered)
                else:
                    categories, ordered = _sorted_unique(series), False
                info = ColumnInfo(str(name), "categorical", start, start + len(categories), str(series.dtype),
                                  categories=categories, ordered=ordered)
            else:
                values = series.to_numpy(dtype=np.float64)
                std = float(values.std())
                info = ColumnInfo(str(name), "numeric", start, start + 1, str(series.dtype),
                                  mean=float(values.mean()), std=std if std > 0 and math.isfinite(std) else 1.0,
                                  integer=pd.api.types.is_integer_dtype(series.dtype),
                                  minimum=float(values.min()), maximum=float(values.max()))
            columns.append(info)
            start = info.stop
        self.columns = columns
        return self

    def encode(self, frame: pd.DataFrame, dtype: torch.dtype = torch.float32) -> Tensor:
        """Rows of `frame` -> (N, D) tensor: standardised numbers and one-hot blocks."""
        self._check_fitted()
        missing = [c.name for c in self.columns if c.name not in frame.columns.astype(str)]
        if missing:
            raise DataError(f"table lacks column(s) {', '.join(missing)} the encoder was fitted on")
        frame = frame.set_axis(frame.columns.astype(str), axis=1)
        out = np.zeros((len(frame), self.dim), dtype=np.float64)
        for c in self.columns:
            series = frame[c.name]
            if c.kind == "numeric":
                if _is_categorical(series):
                    raise DataError(f"column {c.name!r} was numeric when fitted but holds {series.dtype} values now")
                out[:, c.start] = (series.to_numpy(dtype=np.float64) - c.mean) / c.std
            else:
                codes = pd.Index(list(c.categories), dtype=object).get_indexer(series.astype(object))
                if (codes < 0).any():
                    unknown = sorted({str(v) for v in series[codes < 0]})[:5]
                    raise DataError(f"column {c.name!r} has values unseen when the encoder was fitted: {', '.join(unknown)}")
                out[np.arange(len(frame)), c.start + codes] = 1.0
        return torch.from_numpy(out).to(dtype)

    def decode(self, x: Tensor | np.ndarray) -> pd.DataFrame:
        """(N, D) vectors -> DataFrame with the fitted columns and dtypes.

        Numeric: x * std + mean, clipped to the column's fitted [minimum, maximum] (a sampler's
        outlier must not decode to an age of -41) and rounded for integer columns; NaN decodes to
        the mean. Categorical: the category of the largest coordinate in its one-hot block
        (argmax), so any real vector decodes to a valid row.

        >>> enc = TableEncoder().fit(pd.DataFrame({"age": [20, 40, 60], "pet": ["cat", "dog", "cat"]}))
        >>> enc.decode(torch.tensor([[-9.0, 0.2, 0.9], [0.4, 0.7, 0.1]]))
           age  pet
        0   20  dog
        1   47  cat
        """
        self._check_fitted()
        x = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DataError(f"table encoder decodes (N, {self.dim}) arrays, got shape {tuple(x.shape)}")
        data = {}
        for c in self.columns:
            if c.kind == "numeric":
                values = np.nan_to_num(x[:, c.start] * c.std + c.mean, nan=c.mean)
                low = -np.inf if c.minimum is None else c.minimum
                high = np.inf if c.maximum is None else c.maximum
                values = np.clip(values, low, high)
                if c.integer:
                    info = np.iinfo(np.dtype(c.dtype))
                    values = np.clip(np.rint(values), info.min, info.max)
                data[c.name] = pd.Series(values).astype(c.dtype)
            else:
                picked = np.asarray(c.categories, dtype=object)[x[:, c.start : c.stop].argmax(1)]
                if c.dtype == "category":
                    data[c.name] = pd.Categorical(picked, categories=list(c.categories), ordered=c.ordered)
                else:
                    data[c.name] = pd.Series(picked, dtype=object).astype(c.dtype)
        return pd.DataFrame(data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (categories must be JSON values) that `from_dict` restores."""
        def plain(v: Any) -> Any:
            return v.item() if isinstance(v, np.generic) else v

        return {"columns": [dataclasses.asdict(c) | {"categories": None if c.categories is None else [plain(v) for v in c.categories]}
                            for c in self.columns]}

    @classmethod
    def from_dict(cls, d: Any) -> "TableEncoder":
        """The encoder `to_dict` described. `d` may come from a file someone else wrote (a run
        folder), so its layout is checked and a bad one raises DataError, never runs code."""
        enc = cls()
        enc.columns = [_column_from_dict(c, i) for i, c in enumerate(d["columns"])] if isinstance(d, dict) and isinstance(d.get("columns"), list) else []
        if not enc.columns:
            raise DataError("a table encoder description needs a non-empty list 'columns' (as TableEncoder.to_dict writes)")
        start = 0
        for c in enc.columns:
            if c.start != start or c.stop <= c.start:
                raise DataError(f"table encoder column {c.name!r} spans [{c.start}, {c.stop}), expected to start at {start}")
            start = c.stop
        return enc

    def _check_fitted(self) -> None:
        if not self.columns:
            raise DataError("table encoder is not fitted; call fit(frame) first")

    def __repr__(self) -> str:
        kinds = [c.kind for c in self.columns]
        return f"TableEncoder({kinds.count('numeric')} numeric, {kinds.count('categorical')} categorical columns, dim={self.dim})"


_COLUMN_FIELDS = tuple(f.name for f in dataclasses.fields(ColumnInfo))


def _column_from_dict(c: Any, i: int) -> ColumnInfo:
    """Column i of a JSON encoder description as a ColumnInfo, every field checked for its type."""
    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not isinstance(c, dict) or not {"name", "kind", "start", "stop", "dtype"} <= set(c) or not set(c) <= set(_COLUMN_FIELDS):
        raise DataError(f"table encoder column {i} must be an object with name, kind, start, stop and dtype "
                        f"(fields: {', '.join(_COLUMN_FIELDS)}); got {str(c)[:80]}")
    checks = [
        isinstance(c["name"], str), isinstance(c["dtype"], str), count(c["start"]), count(c["stop"]),
        all(c.get(k) is None or number(c[k]) for k in ("mean", "std", "minimum", "maximum")),
        isinstance(c.get("integer", False), bool), isinstance(c.get("ordered", False), bool),
    ]
    if c["kind"] == "numeric":
        checks += [c["stop"] == c["start"] + 1, number(c.get("mean")), number(c.get("std"))]
    elif c["kind"] == "categorical":
        categories = c.get("categories")
        checks += [isinstance(categories, list) and len(categories) == c["stop"] - c["start"]
                   and all(isinstance(v, (str, int, float, bool)) for v in categories)]
    else:
        checks.append(False)
    if all(checks):
        try:
            pd.api.types.pandas_dtype(c["dtype"])
        except TypeError:
            checks.append(False)
    if not all(checks):
        raise DataError(f"table encoder column {i} is malformed: {str(c)[:120]}")
    return ColumnInfo(**(c | {"categories": None if c.get("categories") is None else tuple(c["categories"])}))


def table_dataset(frame: pd.DataFrame, *, name: str, target: str | None = None, seed: int = 0,
                  where: str | None = None) -> Dataset:
    """Encode a whole frame (target column included, so a model learns the joint) as a table dataset.

    storage: (N, D) float32 from a `TableEncoder` fitted on `frame`; labels: the category index of
    `target` (which must be categorical) or None; splits: `seeded_splits(N, seed)`;
    value_range: `TABLE_VALUE_RANGE` widened to cover the data.
    """
    find_missing(frame, where or f"table {name!r}")
    frame = frame.reset_index(drop=True)
    encoder = TableEncoder().fit(frame)
    storage = encoder.encode(frame)
    labels, class_names = None, None
    if target is not None:
        info = encoder.column(str(target))
        if info.kind != "categorical":
            raise DataError(f"target column {target!r} must hold class labels (categorical), it is numeric ({info.dtype})")
        labels = torch.from_numpy(pd.Index(list(info.categories), dtype=object).get_indexer(frame[target].astype(object)).astype(np.int64))
        class_names = tuple(str(k) for k in info.categories)
    lo = min(TABLE_VALUE_RANGE[0], math.floor(storage.min().item()))
    hi = max(TABLE_VALUE_RANGE[1], math.ceil(storage.max().item()))
    spec = DataSpec(
        name=name,
        kind="table",
        shape=(encoder.dim,),
        value_range=(float(lo), float(hi)),
        num_classes=None if class_names is None else len(class_names),
        levels=None,
        class_names=class_names,
    )
    return Dataset(storage, spec, labels, splits=seeded_splits(len(frame), seed), frame=frame, encoder=encoder)
