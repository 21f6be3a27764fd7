"""Tables: a reversible encoder between DataFrames and float vectors, and table datasets.

`TableEncoder` maps each row of a DataFrame to one vector, column by column, after inferring (or
being told) each column's kind (`column_kinds`: continuous, integer, categorical, ordinal, boolean,
datetime):

- a number (datetimes as days or seconds since 1970) becomes, by `numeric`:
  "quantile": one coordinate Phi^-1(F(x)), F the column's empirical CDF interpolated between up to
      1,000 of its quantiles (TabDDPM's Gaussian quantile transform: any marginal becomes N(0, 1));
  "standard": one coordinate (x - mean) / std;
  "mode": mode-specific normalisation (CTGAN, Xu et al. 2019): a variational Gaussian mixture of
      at most 10 modes is fitted to the column, x becomes alpha = (x - mu_k) / (4 sigma_k) and a
      one-hot block over the modes, k the mode most likely to have produced x;
- a discrete column with categories (k_1..k_m) becomes a one-hot block of m coordinates.

A column with missing values gets one more slot: a trailing [present, missing] block for a number
(its value coordinate then holds the median's code), a "missing" category for a discrete one, so a
model generates missing values at their rate. `blocks` lists the continuous coordinates and the
one-hot blocks for models that treat them differently.

`decode` inverts it: numbers back through the transform, clipped to the [min, max] the column held
when fitted, rounded to the decimals it had (integers to whole numbers); each one-hot block by its
argmax, so any real vector decodes to a valid row and categories are never invented.
`to_dict`/`from_dict` keep an encoder as JSON: a trained run keeps its table's in table_encoder.json
(`genlab.train.read_table_encoder`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
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
NUMERIC_TRANSFORMS = ("quantile", "standard", "mode")
MAX_QUANTILES = 1000
MAX_MODES = 10
MODE_WEIGHT_FLOOR = 0.005  # CTGAN drops mixture modes lighter than this
MAX_DECIMALS = 6
_QUANTILE_CLIP = 1e-7  # Phi^-1 of 0 or 1 is infinite: the extreme quantiles map to -+5.2


@dataclasses.dataclass(frozen=True)
class ColumnInfo:
    """Where a column lives in the encoded vector, and how to map it back.

    kind "numeric": coordinate `start` holds the transformed value (`transform`; "mode" adds the
    one-hot mode block start+1..start+len(modes)); decoded values are clipped to [minimum, maximum]
    (the values seen when fitted) and rounded to `decimals` (`integer` columns to 0).
    kind "categorical": coordinates start..start+len(categories)-1 are one-hot over `categories`.
    missing: the column had missing values: a numeric column ends with a [present, missing] block,
    a categorical one with a "missing" slot after its categories.
    dtype: the column's pandas dtype as a string ("int64", "float64", "category", "str", "bool").
    column_kind: the kind in COLUMN_KINDS (None in encoders saved before kinds existed).
    time_unit: datetimes: the unit ("D" or "s") counted since 1970 in the numeric value.
    quantiles: "quantile": the column's values at equally spaced probabilities 0..1.
    modes: "mode": (weight, mean, std) of each mixture mode.
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
    column_kind: str | None = None
    transform: str = "standard"
    missing: bool = False
    decimals: int | None = None
    time_unit: str | None = None
    quantiles: tuple[float, ...] | None = None
    modes: tuple[tuple[float, float, float], ...] | None = None

    @property
    def width(self) -> int:
        return self.stop - self.start

    @property
    def value_width(self) -> int:
        """Coordinates of the value itself, before the missing slot(s)."""
        if self.kind == "categorical":
            return len(self.categories)
        return 1 + (len(self.modes) if self.transform == "mode" else 0)


def find_infinite(frame: pd.DataFrame, where: str) -> None:
    """Raise DataError naming the numeric columns with infinite values (missing values are allowed)."""
    numeric = frame.select_dtypes(include="number")
    if numeric.empty:
        return
    values = numeric.to_numpy(dtype=float)
    bad = np.isinf(values)
    if bad.any():
        columns = [str(c) for c in numeric.columns[bad.any(axis=0)]]
        raise DataError(f"{where} has infinite values in column(s) {', '.join(columns[:10])}; replace them "
                        "(frame.replace([np.inf, -np.inf], np.nan) makes them missing values)")


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
    values = pd.unique(series.dropna())
    try:
        return tuple(sorted(values))
    except TypeError:  # mixed types: order by their text
        return tuple(sorted(values, key=str))


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _decimals(values: np.ndarray) -> int | None:
    """The fewest decimals (at most MAX_DECIMALS) that write every value exactly, or None."""
    for d in range(MAX_DECIMALS + 1):
        if np.array_equal(np.round(values, d), values):
            return d
    return None


def _time_values(series: pd.Series) -> tuple[pd.Series, str]:
    """A datetime (or ISO text) column as a float count of days ("D", when every stamp is a
    midnight) or seconds ("s") since 1970, NaN where missing."""
    stamps = series if pd.api.types.is_datetime64_any_dtype(series.dtype) else pd.to_datetime(series, format="ISO8601")
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    ns = stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
    ns[stamps.isna().to_numpy()] = np.nan
    unit = "D" if np.all(np.nan_to_num(ns) % 86_400e9 == 0) else "s"
    return pd.Series(ns / (86_400e9 if unit == "D" else 1e9), index=series.index), unit


def _mixture_modes(values: np.ndarray, seed: int) -> tuple[tuple[float, float, float], ...]:
    """(weight, mean, std) of the modes of a variational Gaussian mixture fitted to `values` with a
    Dirichlet-process prior (so unneeded modes get ~0 weight and are dropped), as CTGAN does."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    rng = np.random.default_rng(seed)
    fit_on = values if len(values) <= 10_000 else rng.choice(values, 10_000, replace=False)
    spread = float(values.max() - values.min()) or 1.0
    n = min(MAX_MODES, len(np.unique(fit_on)))
    if n < 2:
        return ((1.0, float(values.mean()), 1e-3 * spread),)
    gmm = BayesianGaussianMixture(n_components=n, weight_concentration_prior_type="dirichlet_process",
                                  weight_concentration_prior=1e-3, max_iter=200, random_state=seed)
    with warnings.catch_warnings():  # an unconverged fit still places the modes; CTGAN ignores it too
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(fit_on[:, None])
    keep = gmm.weights_ > MODE_WEIGHT_FLOOR
    stds = np.sqrt(gmm.covariances_.reshape(-1))
    return tuple((float(w), float(m), max(float(sd), 1e-6 * spread))
                 for w, m, sd in zip(gmm.weights_[keep], gmm.means_[keep, 0], stds[keep]))


def _mode_posterior(values: np.ndarray, modes: tuple[tuple[float, float, float], ...]) -> np.ndarray:
    """log w_k + log N(x; mu_k, sigma_k^2) up to a constant: (N, K)."""
    w, mu, sd = (np.array(v) for v in zip(*modes))
    return np.log(w) - np.log(sd) - 0.5 * ((values[:, None] - mu) / sd) ** 2


def _parse_kinds(kinds: Any) -> dict[str, str]:
    """Kinds given as {column: kind} or as text "col=kind,col=kind" (a CLI data option)."""
    if kinds is None or isinstance(kinds, dict):
        return dict(kinds or {})
    pairs = [p.strip() for p in str(kinds).split(",") if p.strip()]
    if not all("=" in p for p in pairs):
        raise DataError(f"kinds={kinds!r}: write COLUMN=KIND pairs separated by commas, e.g. kinds=cut=ordinal,year=categorical")
    return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}


class TableEncoder:
    """Encode each column by its kind (numbers by `numeric`, see the module docstring; one-hot
    blocks for discrete columns), missing values included; decode back to a frame.

    >>> frame = pd.DataFrame({"size": [1.5, 2.25, 3.0], "colour": ["red", "blue", "red"]})
    >>> enc = TableEncoder().fit(frame)
    >>> enc.dim, [c.kind for c in enc.columns], enc.kinds
    (3, ['numeric', 'categorical'], {'size': 'continuous', 'colour': 'categorical'})
    >>> enc.decode(enc.encode(frame, dtype=torch.float64)).equals(frame)
    True
    """

    def __init__(self, *, numeric: str = "quantile", kinds: dict[str, str] | str | None = None, seed: int = 0) -> None:
        if numeric not in NUMERIC_TRANSFORMS:
            raise DataError(f"numeric={numeric!r}: choose one of {', '.join(NUMERIC_TRANSFORMS)}")
        self.numeric = numeric
        self.kind_overrides = _parse_kinds(kinds)
        self.seed = seed
        self.columns: list[ColumnInfo] = []

    @property
    def dim(self) -> int:
        """D, the length of an encoded row."""
        return self.columns[-1].stop if self.columns else 0

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def kinds(self) -> dict[str, str]:
        """{column: kind in COLUMN_KINDS} as fitted (encoders saved before kinds existed: guessed
        from the layout)."""
        def kind(c: ColumnInfo) -> str:
            if c.column_kind is not None:
                return c.column_kind
            if c.kind == "categorical":
                return "boolean" if c.dtype == "bool" else "ordinal" if c.ordered else "categorical"
            return "integer" if c.integer else "continuous"

        return {c.name: kind(c) for c in self.columns}

    @property
    def blocks(self) -> tuple[tuple[str, str, int, int], ...]:
        """The encoded coordinates by role, in order, as (column, role, start, stop):
        role "continuous" for a number's value coordinate (or a mode's alpha), "categorical" for
        each one-hot block (a discrete column's categories, a number's modes, its [present, missing])."""
        out = []
        for c in self.columns:
            if c.kind == "categorical":
                out.append((c.name, "categorical", c.start, c.stop))
                continue
            out.append((c.name, "continuous", c.start, c.start + 1))
            if c.transform == "mode":
                out.append((c.name, "categorical", c.start + 1, c.start + 1 + len(c.modes)))
            if c.missing:
                out.append((c.name, "categorical", c.stop - 2, c.stop))
        return tuple(out)

    def column(self, name: str) -> ColumnInfo:
        for c in self.columns:
            if c.name == name:
                return c
        raise DataError(f"no column {name!r}; columns are {', '.join(map(str, self.column_names))}")

    def fit(self, frame: pd.DataFrame) -> "TableEncoder":
        """Learn each column's kind, transform, range and categories (missing values allowed)."""
        if len(frame) == 0 or frame.shape[1] == 0:
            raise DataError("cannot fit a table encoder on an empty table")
        find_infinite(frame, "the table")
        frame = frame.set_axis(frame.columns.astype(str), axis=1)
        kinds = column_kinds(frame, self.kind_overrides)
        columns, start = [], 0
        for name, kind in kinds.items():
            series = frame[name]
            if series.isna().all():
                raise DataError(f"column {name!r} has no values (all {len(series)} are missing); drop it")
            info = self._fit_discrete(name, series, kind, start) if kind in DISCRETE_KINDS else self._fit_number(name, series, kind, start)
            columns.append(info)
            start = info.stop
        self.columns = columns
        return self

    def _fit_discrete(self, name: str, series: pd.Series, kind: str, start: int) -> ColumnInfo:
        if isinstance(series.dtype, pd.CategoricalDtype):
            categories, ordered = tuple(_plain(v) for v in series.cat.categories), bool(series.cat.ordered) or kind == "ordinal"
        elif kind == "boolean":
            categories, ordered = (False, True), False
        else:
            categories, ordered = tuple(_plain(v) for v in _sorted_unique(series)), kind == "ordinal"
        missing = bool(series.isna().any())
        return ColumnInfo(name, "categorical", start, start + len(categories) + missing, str(series.dtype),
                          categories=categories, ordered=ordered, column_kind=kind, missing=missing)

    def _fit_number(self, name: str, series: pd.Series, kind: str, start: int) -> ColumnInfo:
        time_unit = None
        if kind == "datetime":
            series, time_unit = _time_values(series)
        elif not pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
            raise DataError(f"column {name!r} holds {series.dtype} values, not numbers; it cannot be {kind} "
                            f"(say kinds={name}=categorical, or leave its kind to be inferred)")
        values = series.dropna().to_numpy(dtype=np.float64)
        integer = kind == "integer" or time_unit is not None
        std = float(values.std())
        fields: dict[str, Any] = dict(mean=float(values.mean()), std=std if std > 0 and math.isfinite(std) else 1.0,
                                      integer=integer, minimum=float(values.min()), maximum=float(values.max()),
                                      column_kind=kind, transform=self.numeric, missing=bool(series.isna().any()),
                                      decimals=0 if integer else _decimals(values), time_unit=time_unit)
        if self.numeric == "quantile":
            n = min(MAX_QUANTILES, len(values))
            fields["quantiles"] = tuple(float(q) for q in np.quantile(values, np.linspace(0.0, 1.0, n)))
        elif self.numeric == "mode":
            fields["modes"] = _mixture_modes(values, self.seed)
        width = 1 + (len(fields["modes"]) if self.numeric == "mode" else 0) + 2 * fields["missing"]
        dtype = "datetime64[ns]" if time_unit is not None else str(series.dtype)
        return ColumnInfo(name, "numeric", start, start + width, dtype, **fields)

    # -- numbers <-> codes ---------------------------------------------------------------------------
    @staticmethod
    def _number_codes(c: ColumnInfo, values: np.ndarray) -> np.ndarray:
        """Non-missing values (N,) -> their (N, value_width) codes."""
        if c.transform == "quantile":
            from scipy.special import ndtri

            q = np.asarray(c.quantiles)
            p = np.linspace(0.0, 1.0, len(q))
            # the mean of the interpolations from both ends puts a repeated value (a flat run of
            # quantiles) at the middle of its run, which decodes back to it
            u = 0.5 * (np.interp(values, q, p) - np.interp(-values, -q[::-1], -p[::-1]))
            # squeezed (not clipped) into [eps, 1 - eps]: the extremes stay invertible
            return ndtri(_QUANTILE_CLIP + (1.0 - 2.0 * _QUANTILE_CLIP) * u)[:, None]
        if c.transform == "mode":
            k = _mode_posterior(values, c.modes).argmax(1)
            _, mu, sd = (np.array(v) for v in zip(*c.modes))
            codes = np.zeros((len(values), 1 + len(c.modes)))
            codes[:, 0] = (values - mu[k]) / (4.0 * sd[k])
            codes[np.arange(len(values)), 1 + k] = 1.0
            return codes
        return ((values - c.mean) / c.std)[:, None]

    @staticmethod
    def _number_values(c: ColumnInfo, codes: np.ndarray) -> np.ndarray:
        """(N, value_width) codes -> values (N,), the inverse of `_number_codes`."""
        if c.transform == "quantile":
            from scipy.special import ndtr

            q = np.asarray(c.quantiles)
            u = (ndtr(codes[:, 0]) - _QUANTILE_CLIP) / (1.0 - 2.0 * _QUANTILE_CLIP)
            return np.interp(u, np.linspace(0.0, 1.0, len(q)), q)
        if c.transform == "mode":
            _, mu, sd = (np.array(v) for v in zip(*c.modes))
            k = codes[:, 1:].argmax(1)
            return codes[:, 0] * 4.0 * sd[k] + mu[k]
        return codes[:, 0] * c.std + c.mean

    def encode(self, frame: pd.DataFrame, dtype: torch.dtype = torch.float32) -> Tensor:
        """Rows of `frame` -> (N, D) tensor of codes (see the module docstring)."""
        self._check_fitted()
        missing = [c.name for c in self.columns if c.name not in frame.columns.astype(str)]
        if missing:
            raise DataError(f"table lacks column(s) {', '.join(missing)} the encoder was fitted on")
        frame = frame.set_axis(frame.columns.astype(str), axis=1)
        out = np.zeros((len(frame), self.dim), dtype=np.float64)
        rows = np.arange(len(frame))
        for c in self.columns:
            series = frame[c.name]
            absent = series.isna().to_numpy()
            if absent.any() and not c.missing:
                raise DataError(f"column {c.name!r} has {int(absent.sum())} missing values, and had none when the encoder "
                                "was fitted; fill them (frame.fillna(...)) or refit the encoder on data with missing values")
            if c.kind == "numeric":
                if c.time_unit is not None:
                    values = _time_values(series)[0].to_numpy()
                elif pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
                    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
                else:
                    raise DataError(f"column {c.name!r} was numeric when fitted but holds {series.dtype} values now")
                present = ~absent
                out[present, c.start : c.start + c.value_width] = self._number_codes(c, values[present])
                if absent.any():
                    fill = np.array([np.median(c.quantiles) if c.quantiles else c.mean])
                    out[absent, c.start : c.start + c.value_width] = self._number_codes(c, fill)
                if c.missing:
                    out[rows, c.stop - 2 + absent.astype(int)] = 1.0
            else:
                labels = series.astype(object)
                codes = pd.Index(list(c.categories), dtype=object).get_indexer(labels)
                unknown = (codes < 0) & ~absent
                if unknown.any():
                    shown = sorted({str(v) for v in labels[unknown]})[:5]
                    raise DataError(f"column {c.name!r} has values unseen when the encoder was fitted: {', '.join(shown)}")
                codes[absent] = len(c.categories)
                out[rows, c.start + codes] = 1.0
        return torch.from_numpy(out).to(dtype)

    def decode(self, x: Tensor | np.ndarray) -> pd.DataFrame:
        """(N, D) vectors -> DataFrame with the fitted columns and dtypes.

        Numbers: back through the transform, clipped to the column's fitted [minimum, maximum] (a
        sampler's outlier must not decode to an age of -41), rounded to the column's decimals
        (integers to whole numbers); NaN decodes to the middle value. One-hot blocks (categories,
        modes, missing slots) by their argmax, so any real vector decodes to a valid row.

        >>> enc = TableEncoder(numeric="standard").fit(pd.DataFrame({"age": [20, 40, 60], "pet": ["cat", "dog", "cat"]}))
        >>> enc.decode(torch.tensor([[-9.0, 0.2, 0.9], [0.4, 0.7, 0.1]]))
           age  pet
        0   20  dog
        1   47  cat
        """
        self._check_fitted()
        x = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DataError(f"table encoder decodes (N, {self.dim}) arrays, got shape {tuple(x.shape)}")
        return pd.DataFrame({c.name: self._decode_column(c, x) for c in self.columns})

    def _decode_column(self, c: ColumnInfo, x: np.ndarray) -> Any:
        absent = x[:, c.stop - 2 : c.stop].argmax(1) == 1 if c.kind == "numeric" and c.missing else None
        if c.kind == "categorical":
            block = x[:, c.start : c.stop]
            picked = np.asarray(list(c.categories) + [None], dtype=object)[np.nan_to_num(block, nan=-np.inf).argmax(1)]
            absent = pd.isna(picked) if c.missing else None
            if c.dtype == "category":
                return pd.Categorical(picked, categories=list(c.categories), ordered=c.ordered)
            return _with_dtype(picked, c.dtype, absent)
        codes = x[:, c.start : c.start + c.value_width]
        middle = self._number_codes(c, np.array([np.median(c.quantiles) if c.quantiles else c.mean]))[0]
        codes = np.where(np.isnan(codes), middle, codes)
        values = self._number_values(c, codes)
        low = -np.inf if c.minimum is None else c.minimum
        high = np.inf if c.maximum is None else c.maximum
        values = np.clip(values, low, high)
        if c.decimals is not None:
            values = np.round(values, c.decimals)
        if c.integer:
            values = np.rint(values)
        if c.time_unit is not None:
            stamps = pd.to_datetime(values.astype(np.int64), unit=c.time_unit) if len(values) else pd.to_datetime([])
            series = pd.Series(stamps)
            return series.where(~absent) if absent is not None else series
        if c.integer and np.dtype(c.dtype if c.dtype in np.sctypeDict else "float64").kind in "iu":
            info = np.iinfo(np.dtype(c.dtype))
            values = np.clip(values, info.min, info.max)
        return _with_dtype(values, c.dtype, absent, integer=c.integer)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (categories must be JSON values) that `from_dict` restores."""
        def described(c: ColumnInfo) -> dict[str, Any]:
            d = dataclasses.asdict(c) | {"categories": None if c.categories is None else [_plain(v) for v in c.categories]}
            d["quantiles"] = None if c.quantiles is None else list(c.quantiles)
            d["modes"] = None if c.modes is None else [list(m) for m in c.modes]
            return d

        return {"columns": [described(c) for c in self.columns], "numeric": self.numeric}

    @classmethod
    def from_dict(cls, d: Any) -> "TableEncoder":
        """The encoder `to_dict` described. `d` may come from a file someone else wrote (a run
        folder), so its layout is checked and a bad one raises DataError, never runs code."""
        numeric = d.get("numeric", "standard") if isinstance(d, dict) else "standard"
        if numeric not in NUMERIC_TRANSFORMS:
            raise DataError(f"a table encoder description has numeric={str(numeric)[:40]!r}; expected one of {', '.join(NUMERIC_TRANSFORMS)}")
        enc = cls(numeric=numeric)
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
        return (f"TableEncoder({kinds.count('numeric')} numeric ({self.numeric}), {kinds.count('categorical')} categorical "
                f"columns, dim={self.dim})")


def _with_dtype(values: np.ndarray, dtype: str, absent: np.ndarray | None, integer: bool = False) -> pd.Series:
    """Decoded values as a Series of the column's dtype; missing values (absent) as NaN. An integer
    or boolean column with missing values takes pandas' nullable dtype ("Int64", "boolean")."""
    values = np.asarray(values, dtype=object if values.dtype == object else None)
    has_missing = absent is not None and absent.any()
    series = pd.Series(values.astype(object) if has_missing else values)
    if has_missing:
        series[absent] = np.nan
    target = pd.api.types.pandas_dtype(dtype)
    if has_missing and target.kind in "iub":
        target = "boolean" if target.kind == "b" else "Int64"
    elif has_missing and integer and target.kind == "f":
        target = "Int64"  # an integer column that pandas read as float because of its NaNs
    if has_missing and target == "Int64":
        return pd.Series(pd.array([None if pd.isna(v) else int(v) for v in series], dtype="Int64"))
    return series.astype(target)


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
    modes, quantiles = c.get("modes"), c.get("quantiles")
    checks = [
        isinstance(c["name"], str), isinstance(c["dtype"], str), count(c["start"]), count(c["stop"]),
        all(c.get(k) is None or number(c[k]) for k in ("mean", "std", "minimum", "maximum")),
        isinstance(c.get("integer", False), bool), isinstance(c.get("ordered", False), bool),
        isinstance(c.get("missing", False), bool), c.get("column_kind") in (None, *COLUMN_KINDS),
        c.get("transform", "standard") in NUMERIC_TRANSFORMS, c.get("time_unit") in (None, "D", "s"),
        c.get("decimals") is None or (count(c["decimals"]) and c["decimals"] <= MAX_DECIMALS),
        quantiles is None or (isinstance(quantiles, list) and len(quantiles) >= 1 and all(number(q) for q in quantiles)
                              and all(a <= b for a, b in zip(quantiles, quantiles[1:]))),
        modes is None or (isinstance(modes, list) and len(modes) >= 1 and all(
            isinstance(m, list) and len(m) == 3 and all(number(v) for v in m) and m[0] > 0 and m[2] > 0 for m in modes)),
    ]
    missing = 2 * bool(c.get("missing", False))
    if c["kind"] == "numeric":
        transform = c.get("transform", "standard")
        width = 1 + (len(modes) if transform == "mode" and isinstance(modes, list) else 0) + missing
        checks += [c["stop"] == c["start"] + width, number(c.get("mean")), number(c.get("std")),
                   transform != "quantile" or quantiles is not None, transform != "mode" or modes is not None]
    elif c["kind"] == "categorical":
        categories = c.get("categories")
        checks += [isinstance(categories, list) and len(categories) + missing // 2 == c["stop"] - c["start"]
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
    c = c | {"categories": None if c.get("categories") is None else tuple(c["categories"]),
             "quantiles": None if quantiles is None else tuple(float(q) for q in quantiles),
             "modes": None if modes is None else tuple(tuple(float(v) for v in m) for m in modes)}
    return ColumnInfo(**c)


def split_blocks(blocks: Any) -> tuple[list[int], list[tuple[str, int, int]]]:
    """`DataSpec.table_blocks` / `TableEncoder.blocks` as the two things a table model reads: the
    index of each continuous coordinate, and each one-hot group as (column, start, stop)."""
    continuous = [int(start) for _, role, start, _ in blocks if role == "continuous"]
    groups = [(str(name), int(start), int(stop)) for name, role, start, stop in blocks if role == "categorical"]
    return continuous, groups


def table_dataset(frame: pd.DataFrame, *, name: str, target: str | None = None, seed: int = 0,
                  where: str | None = None, numeric: str = "quantile", kinds: dict[str, str] | str | None = None) -> Dataset:
    """Encode a whole frame (target column included, so a model learns the joint) as a table dataset.

    storage: (N, D) float32 from a `TableEncoder(numeric=numeric, kinds=kinds)` fitted on `frame`
    (missing values become their own slots); labels: the category index of `target` (which must be
    categorical, without missing values) or None; splits: `seeded_splits(N, seed)`;
    value_range: `TABLE_VALUE_RANGE` widened to cover the data.
    """
    where = where or f"table {name!r}"
    find_infinite(frame, where)
    frame = frame.reset_index(drop=True)
    encoder = TableEncoder(numeric=numeric, kinds=kinds, seed=seed).fit(frame)
    storage = encoder.encode(frame)
    labels, class_names = None, None
    if target is not None:
        info = encoder.column(str(target))
        if info.kind != "categorical":
            raise DataError(f"target column {target!r} must hold class labels (categorical), it is numeric ({info.dtype})")
        if info.missing:
            raise DataError(f"target column {target!r} of {where} has {int(frame[target].isna().sum())} missing labels; "
                            "drop those rows (frame.dropna(subset=[target])) or choose another target")
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
        table_blocks=encoder.blocks,
        target=None if target is None else str(target),
        rows=len(frame),
    )
    return Dataset(storage, spec, labels, splits=seeded_splits(len(frame), seed), frame=frame, encoder=encoder)
