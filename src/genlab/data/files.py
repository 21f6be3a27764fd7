"""Array and table files a user has: .npy / .npz arrays, idx files (the MNIST format), CSV tables.

How an array becomes a dataset (`array_dataset`):

- (N, D) numbers -> vectors, kind "vector", float32, value_range the whole numbers around the data;
- (N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3, 4 -> images (N, C, H, W):
  integers in 0..255 are stored as uint8 (levels 256); floats must already lie in [0, 1]
  (levels None); booleans become 0/1 floats (levels 2);
- labels (N,) of any values become class indices 0..K-1, class names their sorted values.
"""

from __future__ import annotations

import gzip
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from genlab.data.dataset import DataSpec, Dataset
from genlab.data.images import image_spec, parse_flag
from genlab.data.splits import seeded_splits
from genlab.data.tables import table_dataset
from genlab.errors import DataError

X_KEYS = ("x", "images", "data", "X")
Y_KEYS = ("y", "labels", "targets", "target", "Y")


# -- arrays -> datasets ----------------------------------------------------------------------------------
def _channels_first(x: np.ndarray, layout: str | None, where: str) -> np.ndarray:
    """(N, H, W) / (N, H, W, C) / (N, C, H, W) -> (N, C, H, W)."""
    if x.ndim == 3:
        return x[:, None]
    channels = (1, 3, 4)
    if layout is None:
        last, first = x.shape[3] in channels, x.shape[1] in channels
        if last and not first:
            layout = "NHWC"
        elif first and not last:
            layout = "NCHW"
        elif last and first and x.shape[1] == x.shape[2] != x.shape[3]:
            layout = "NHWC"
        elif last and first and x.shape[2] == x.shape[3] != x.shape[1]:
            layout = "NCHW"
        else:
            raise DataError(
                f"{where}: cannot tell the channel axis of images of shape {x.shape}; "
                "pass layout='NHWC' or layout='NCHW' (CLI: --data-option layout=NHWC)"
            )
    layout = layout.upper()
    if layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    elif layout != "NCHW":
        raise DataError(f"layout must be 'NHWC' or 'NCHW', got {layout!r}")
    if x.shape[1] not in channels:
        raise DataError(f"{where}: images with {x.shape[1]} channels; expected 1, 3 or 4 (shape {x.shape}, layout {layout})")
    return np.ascontiguousarray(x)


def _class_indices(y: np.ndarray, n: int, where: str) -> tuple[torch.Tensor, tuple[str, ...]]:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{where}: labels must have shape ({n},), got {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or (y != np.round(y)).any():
            raise DataError(f"{where}: labels must be class labels (integers or names), found non-integer numbers")
        y = y.astype(np.int64)
    if y.dtype.kind not in "biuUS":
        raise DataError(f"{where}: labels of dtype {y.dtype} are not class labels")
    values, index = np.unique(y, return_inverse=True)
    names = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist())
    return torch.from_numpy(index.reshape(-1).astype(np.int64)), names


def array_dataset(x: np.ndarray, y: np.ndarray | None = None, *, name: str, seed: int = 0,
                  layout: str | None = None, where: str | None = None) -> Dataset:
    """An array (and optional labels) as a dataset, following the rules of the module docstring.
    Splits: `seeded_splits(N, seed)`."""
    where = where or name
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: array of dtype {x.dtype} is not numeric; genlab reads numbers (images or vectors)")
    if x.ndim not in (2, 3, 4) or x.shape[0] == 0:
        raise DataError(
            f"{where}: array of shape {x.shape}; expected (N, D) vectors or (N, H, W), (N, H, W, C), (N, C, H, W) images"
        )
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        rows = int((~np.isfinite(x.reshape(len(x), -1))).any(1).sum())
        raise DataError(f"{where}: {rows} of {len(x)} samples hold NaN or infinite values; drop or fill them first")
    labels, class_names = (None, None) if y is None else _class_indices(y, len(x), where)
    splits = seeded_splits(len(x), seed)

    if x.ndim == 2:
        storage = torch.from_numpy(x.astype(np.float32))
        lo, hi = math.floor(float(x.min())), math.ceil(float(x.max()))
        spec = DataSpec(name=name, kind="vector", shape=(x.shape[1],), value_range=(float(lo), float(max(hi, lo + 1))),
                        num_classes=None if class_names is None else len(class_names), levels=None,
                        class_names=class_names)
        return Dataset(storage, spec, labels, splits=splits)

    x = _channels_first(x, layout, where)
    if x.dtype.kind == "b":
        storage, levels = torch.from_numpy(x.astype(np.float32)), 2
    elif x.dtype.kind in "iu":
        if x.min() < 0 or x.max() > 255:
            raise DataError(f"{where}: integer images must hold values 0..255, found {x.min()}..{x.max()}")
        storage, levels = torch.from_numpy(x.astype(np.uint8)), 256
    else:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"{where}: float images must lie in [0, 1], found values in [{lo:g}, {hi:g}]; "
                "scale them (e.g. x / 255) or save them as uint8"
            )
        storage, levels = torch.from_numpy(x.astype(np.float32)), None
    return Dataset(storage, image_spec(name, storage, class_names, levels), labels, splits=splits)


# -- .npy / .npz ---------------------------------------------------------------------------------------------
def load_array_file(path: Path, *, seed: int = 0, key: str | None = None, label_key: str | None = None,
                    layout: str | None = None) -> Dataset:
    """A .npy array, or an .npz with samples under `key` (else x, images, data, or its only array)
    and optional labels under `label_key` (else y, labels, targets)."""
    where = f"'{path}'"
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise DataError(f"{where} is not a readable NumPy file ({err}); arrays of Python objects are not read") from None
    y = None
    if isinstance(loaded, np.ndarray):
        x = loaded
    else:
        with loaded:
            keys = list(loaded.files)
            x_key = key or next((k for k in X_KEYS if k in keys), None)
            y_key = label_key or next((k for k in Y_KEYS if k in keys), None)
            if x_key is None:
                rest = [k for k in keys if k != y_key]
                if len(rest) != 1:
                    raise DataError(
                        f"{where} holds arrays {', '.join(keys) or '(none)'}; name the samples x (labels y), "
                        "or pass key=NAME (CLI: --data-option key=NAME)"
                    )
                x_key = rest[0]
            for k in (x_key, y_key):
                if k is not None and k not in keys:
                    raise DataError(f"{where} has no array {k!r}; it holds {', '.join(keys)}")
            try:
                x = loaded[x_key]
                y = None if y_key is None else loaded[y_key]
            except ValueError:
                raise DataError(f"{where}: its arrays hold Python objects, not numbers; save numeric arrays") from None
    return array_dataset(x, y, name=path.name.split(".")[0], seed=seed, layout=layout, where=where)


# -- idx ---------------------------------------------------------------------------------------------------
# The idx format (LeCun et al., MNIST): bytes 0, 0, a type code, the number of dimensions d,
# then d big-endian int32 sizes, then the values in C order, big-endian.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic bytes."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"'{path}' is a damaged gzip file: {err}") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an idx file (gzipped or not) into an array of its stored shape and type (native byte order).

    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     f = os.path.join(d, "a-idx1-ubyte")
    ...     _ = open(f, "wb").write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    ...     read_idx(f).tolist()
    [7, 8, 9]
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"'{path}' is not an idx file (it must start with bytes 0, 0, a type code among "
                        f"{', '.join(hex(c) for c in IDX_TYPES)}, the number of dimensions)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"'{path}': idx header is truncated or has no dimensions")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    count = int(np.prod(dims))
    if len(raw) - header != count * dtype.itemsize:
        raise DataError(f"'{path}': idx header says shape {dims} ({count * dtype.itemsize} bytes of data), "
                        f"the file holds {len(raw) - header}; the file may be truncated")
    values = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return values.astype(dtype.newbyteorder("="))


def idx_labels_sibling(path: Path) -> Path | None:
    """The labels file next to an images file: 'images' -> 'labels', 'idx3' -> 'idx1', with or without .gz."""
    name = path.name
    if "images" not in name and "idx3" not in name:
        return None
    base = name.replace("images", "labels").replace("idx3", "idx1")
    base = base[:-3] if base.endswith(".gz") else base
    for candidate in (base, base + ".gz"):
        if (path.parent / candidate).is_file() and candidate != name:
            return path.parent / candidate
    return None


def is_idx_name(path: Path) -> bool:
    name = path.name.lower()
    return "idx" in name and ("ubyte" in name or name.endswith((".idx", ".idx.gz")))


def load_idx_file(path: Path, *, seed: int = 0, labels: bool = True) -> Dataset:
    """An idx file as a dataset (N, H, W) -> images, (N, D) -> vectors; labels from the sibling
    labels file when there is one (e.g. train-images-idx3-ubyte -> train-labels-idx1-ubyte)."""
    x = read_idx(path)
    if x.ndim == 1:
        raise DataError(f"'{path}' holds one number per sample (a labels file?); pass the images file instead")
    y = None
    sibling = idx_labels_sibling(path) if parse_flag(labels, "labels") else None
    if sibling is not None:
        y = read_idx(sibling)
        if y.shape != (len(x),):
            raise DataError(f"labels file '{sibling}' has shape {y.shape}, expected ({len(x)},) for '{path}'")
    name = path.name.split(".")[0].replace("-idx3-ubyte", "").replace("-idx1-ubyte", "")
    return array_dataset(x, y, name=name, seed=seed, where=f"'{path}'")


# -- CSV -----------------------------------------------------------------------------------------------------
def load_csv(path: Path, *, seed: int = 0, target: str | None = None, categorical: Any = None,
             sep: str | None = None, numeric: str = "quantile", kinds: Any = None) -> Dataset:
    """A CSV table through `TableEncoder`: each column's kind inferred (`column_kinds`) except
    where `kinds` ("col=kind,...") says it, `categorical` ("a,b") naming columns to treat as
    categories; numbers encoded by `numeric` (quantile, standard or mode); empty cells and NA are
    missing values; `target` names the class-label column (labels)."""
    where = f"'{path}'"
    try:
        frame = pd.read_csv(path, sep=sep if sep is not None else ("\t" if path.suffix.lower() == ".tsv" else ","))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {where} as CSV: {err}") from None
    if frame.empty:
        raise DataError(f"{where} has no rows")
    if isinstance(categorical, str):
        categorical = [c.strip() for c in categorical.split(",") if c.strip()]
    for column in [*(categorical or []), *([target] if target is not None else [])]:
        if column not in frame.columns:
            raise DataError(f"{where} has no column {column!r}; its columns are {', '.join(map(str, frame.columns))}")
    for column in categorical or []:
        frame[column] = frame[column].astype("category")
    if target is not None and pd.api.types.is_numeric_dtype(frame[target].dtype):
        values = frame[target].dropna().to_numpy()
        if values.dtype.kind == "f" and (values != np.round(values)).any():
            raise DataError(f"target column {target!r} of {where} holds non-integer numbers; a target is a class label")
        frame[target] = frame[target].astype("category")
    return table_dataset(frame, name=path.stem, target=target, seed=seed, where=where, numeric=numeric, kinds=kinds)
