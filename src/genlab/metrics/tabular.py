"""How good a synthetic table is: fidelity, detectability, usefulness and privacy.

Every function takes pandas DataFrames with the same columns (a real table and a synthetic one, as
`TableEncoder.decode` gives them) and the columns' kinds (`genlab.data.tables.column_kinds`; inferred
from the real table when not given).

- `quality_report`: SDMetrics' QualityReport (single table), definition for definition.
  Column shapes: KSComplement 1 - sup_x |F_r(x) - F_s(x)| for numbers and dates, TVComplement
  1 - 1/2 sum_k |p_r(k) - p_s(k)| for discrete columns (missing values dropped).
  Column-pair trends: CorrelationSimilarity 1 - |rho_r - rho_s| / 2 (Pearson) for two numeric
  columns, ContingencySimilarity 1 - 1/2 sum_{a,b} |P_r(a, b) - P_s(a, b)| otherwise, a numeric
  column being cut into the 10 bins of `numpy.histogram_bin_edges` of its own table (as SDMetrics
  does, each table with its own edges; a missing value is a bin of its own). The property averages
  the pairs whose real association is strong enough to matter (|rho_r| > 0.5, or Cramer's V > 0.3),
  as SDMetrics >= 0.2x does; `pair_trends_all` averages every pair. The score is the mean of both.
- `detection_auc`: ROC AUC of a gradient-boosted classifier telling real from synthetic rows,
  out of fold (0.5: indistinguishable, 1: every row told apart).
- `ml_efficacy`: train on synthetic, test on real held-out rows (TSTR) against train on real (TRTR),
  for one target column: accuracy and ROC AUC for a class, R^2 for a number.
- `privacy`: distance to the closest training record (DCR) of synthetic rows against that of
  held-out real rows, the share of synthetic rows closer to the training rows than to an equally
  large held-out set (0.5 is ideal), and the share of exact copies of training rows.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
from typing import Any

import numpy as np
import pandas as pd
import torch

from genlab.data.tables import DISCRETE_KINDS, column_kinds
from genlab.errors import DataError

__all__ = [
    "TableQuality",
    "column_shapes",
    "detection_auc",
    "ml_efficacy",
    "pair_trends",
    "privacy",
    "quality_report",
    "table_metrics",
]

# SDMetrics' thresholds for a pair to count in the pair-trends property (reports/utils.py), and the
# rounding KSComplement applies before comparing values (float noise must not split equal values).
REAL_CORRELATION_THRESHOLD = 0.5
REAL_ASSOCIATION_THRESHOLD = 0.3
KS_DECIMALS = sys.float_info.dig - 1
PAIR_BINS = 10


def _kinds(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str] | None) -> dict[str, str]:
    if list(map(str, real.columns)) != list(map(str, synthetic.columns)):
        raise DataError(f"the synthetic table's columns ({', '.join(map(str, synthetic.columns))}) differ from the "
                        f"real table's ({', '.join(map(str, real.columns))}); decode samples with the run's table encoder")
    if len(real) == 0 or len(synthetic) == 0:
        raise DataError(f"cannot compare tables of {len(real)} real and {len(synthetic)} synthetic rows; both need rows")
    return column_kinds(real) if kinds is None else {str(c): kinds[str(c)] for c in real.columns}


def _is_continuous(kind: str) -> bool:
    return kind not in DISCRETE_KINDS


def _as_number(series: pd.Series, kind: str) -> pd.Series:
    """Numbers as floats; datetimes as nanoseconds since the epoch (what SDMetrics compares)."""
    if kind == "datetime":
        stamps = pd.to_datetime(series, errors="coerce", format="ISO8601") if not pd.api.types.is_datetime64_any_dtype(series) else series
        out = pd.Series(stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64), index=series.index)
        return out.where(stamps.notna())
    return pd.to_numeric(series, errors="coerce").astype(np.float64)


def _as_labels(series: pd.Series) -> pd.Series:
    """Discrete values as plain Python objects with NaN for missing (category dtypes compare by value)."""
    return series.astype(object).where(series.notna(), np.nan)


# -- Column shapes ----------------------------------------------------------------------------------
def ks_complement(real: pd.Series, synthetic: pd.Series) -> float:
    """1 - the two-sample Kolmogorov-Smirnov statistic of the non-missing values (SDMetrics' KSComplement)."""
    from scipy.stats import ks_2samp

    r, s = real.dropna().round(KS_DECIMALS), synthetic.dropna().round(KS_DECIMALS)
    if len(r) == 0 or len(s) == 0:
        return math.nan
    return 1.0 - float(ks_2samp(r.to_numpy(), s.to_numpy()).statistic)


def tv_complement(real: pd.Series, synthetic: pd.Series) -> float:
    """1 - the total variation distance 1/2 sum_k |p_r(k) - p_s(k)| between the frequencies of the
    non-missing values (SDMetrics' TVComplement)."""
    p = _as_labels(real).dropna().value_counts(normalize=True)
    q = _as_labels(synthetic).dropna().value_counts(normalize=True)
    if len(p) == 0 or len(q) == 0:
        return math.nan
    p, q = p.align(q, fill_value=0.0)
    return 1.0 - 0.5 * float((p - q).abs().sum())


def column_shapes(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per column: column, metric ("KSComplement" or "TVComplement"), score in [0, 1]."""
    kinds = _kinds(real, synthetic, kinds)
    rows = []
    for name, kind in kinds.items():
        if _is_continuous(kind):
            score = ks_complement(_as_number(real[name], kind), _as_number(synthetic[name], kind))
            rows.append((name, "KSComplement", score))
        else:
            rows.append((name, "TVComplement", tv_complement(real[name], synthetic[name])))
    return pd.DataFrame(rows, columns=["column", "metric", "score"])


# -- Column-pair trends -----------------------------------------------------------------------------
def _bin_edges(values: pd.Series) -> np.ndarray:
    finite = values.dropna().to_numpy()
    return np.histogram_bin_edges(finite, bins=PAIR_BINS) if len(finite) else np.array([np.inf])


def _binned(values: pd.Series, edges: np.ndarray) -> pd.Series:
    """The bin index of each value (`numpy.digitize`); a missing value gets the bin past the last."""
    return pd.Series(np.digitize(values.to_numpy(), edges), index=values.index)


def _joint_counts(a: pd.Series, b: pd.Series) -> pd.Series:
    return pd.DataFrame({"a": a.to_numpy(), "b": b.to_numpy()}).groupby(["a", "b"], dropna=False).size()


def _cramers_v(counts: pd.Series) -> float:
    """Cramer's V of the contingency table of `counts` (indexed by (a, b))."""
    from scipy.stats.contingency import association

    table = counts.unstack(fill_value=0).to_numpy()
    if table.sum() == 0 or min(table.shape) < 2:
        return math.nan
    return float(association(table, method="cramer"))


def pair_trends(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str] | None = None, *,
                shared_bins: bool = False) -> pd.DataFrame:
    """One row per pair of columns (in column order): column_1, column_2, metric
    ("CorrelationSimilarity" or "ContingencySimilarity"), score, real_correlation (numeric pairs),
    synthetic_correlation, real_association (Cramer's V, other pairs) and counts (whether the pair
    passes SDMetrics' threshold and so counts in the property's average).

    A numeric column in a pair with a discrete one is cut into 10 equal-width bins. SDMetrics cuts
    each table over its own range, so one outlying synthetic value moves every bin and two samples
    of one distribution score well below 1; shared_bins=True cuts both tables at the real table's
    edges (the outer ones open), which measures the joint alone."""
    from scipy.stats import pearsonr

    kinds = _kinds(real, synthetic, kinds)
    numbers = {n: (_as_number(real[n], k), _as_number(synthetic[n], k)) for n, k in kinds.items() if _is_continuous(k)}
    discrete = {n: (_as_labels(real[n]), _as_labels(synthetic[n])) for n, k in kinds.items() if not _is_continuous(k)}
    bins = {}
    for n, (r, s) in numbers.items():
        if shared_bins:
            edges = _bin_edges(r)
            edges[0], edges[-1] = -np.inf, np.inf
            bins[n] = (_binned(r, edges), _binned(s, edges))
        else:
            bins[n] = (_binned(r, _bin_edges(r)), _binned(s, _bin_edges(s)))
    rows = []
    for a, b in itertools.combinations(kinds, 2):
        if a in numbers and b in numbers:
            r = pd.DataFrame({"a": numbers[a][0], "b": numbers[b][0]}).dropna()
            s = pd.DataFrame({"a": numbers[a][1], "b": numbers[b][1]}).dropna()
            constant = min(r["a"].nunique(), r["b"].nunique(), s["a"].nunique(), s["b"].nunique()) < 2
            rho_r = math.nan if constant else float(pearsonr(r["a"], r["b"]).statistic)
            rho_s = math.nan if constant else float(pearsonr(s["a"], s["b"]).statistic)
            score = 1.0 - abs(rho_r - rho_s) / 2.0
            rows.append((a, b, "CorrelationSimilarity", score, rho_r, rho_s, math.nan,
                         bool(abs(rho_r) > REAL_CORRELATION_THRESHOLD) and math.isfinite(score)))
        else:
            ra, sa = bins[a] if a in bins else discrete[a]
            rb, sb = bins[b] if b in bins else discrete[b]
            p, q = _joint_counts(ra, rb), _joint_counts(sa, sb)
            v = _cramers_v(p)
            p, q = (p / len(ra)).align(q / len(sa), fill_value=0.0)
            score = 1.0 - 0.5 * float((p - q).abs().sum())
            rows.append((a, b, "ContingencySimilarity", score, math.nan, math.nan, v,
                         bool(v > REAL_ASSOCIATION_THRESHOLD)))
    return pd.DataFrame(rows, columns=["column_1", "column_2", "metric", "score", "real_correlation",
                                       "synthetic_correlation", "real_association", "counts"])


@dataclasses.dataclass(frozen=True)
class TableQuality:
    """SDMetrics' quality report of a synthetic table: the two properties, their mean, and details.

    column_shapes: mean score over columns; pair_trends: mean over the pairs that count (NaN when
    none does); pair_trends_all: mean over every pair; score: mean of the two properties (NaN
    ignored, as SDMetrics). columns / pairs: the per-column and per-pair tables."""

    column_shapes: float
    pair_trends: float
    pair_trends_all: float
    score: float
    columns: pd.DataFrame
    pairs: pd.DataFrame

    def summary(self) -> dict[str, float]:
        return {"quality": self.score, "column_shapes": self.column_shapes, "pair_trends": self.pair_trends,
                "pair_trends_all": self.pair_trends_all}


def quality_report(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str] | None = None, *,
                   shared_bins: bool = False) -> TableQuality:
    """Column shapes and column-pair trends of `synthetic` against `real`: SDMetrics' QualityReport
    (on tables of more than 50,000 rows SDMetrics scores contingencies on a random 50,000 of them;
    this uses every row). shared_bins: see `pair_trends`."""
    kinds = _kinds(real, synthetic, kinds)
    columns = column_shapes(real, synthetic, kinds)
    pairs = pair_trends(real, synthetic, kinds, shared_bins=shared_bins)
    shapes = float(columns["score"].mean())
    counted = pairs.loc[pairs["counts"], "score"]
    trends = float(counted.mean()) if len(counted) else math.nan
    properties = [v for v in (shapes, trends) if math.isfinite(v)]
    return TableQuality(shapes, trends, float(pairs["score"].mean()) if len(pairs) else math.nan,
                        float(np.mean(properties)) if properties else math.nan, columns, pairs)


# -- Rows as features for a classifier -------------------------------------------------------------
class _Features:
    """Rows -> a float matrix for scikit-learn's histogram gradient boosting: numbers (datetimes as
    seconds) with NaN for missing, discrete columns as category codes fitted on `reference`
    (unseen or missing -> NaN), flagged as categorical where they have at most 255 levels."""

    def __init__(self, reference: pd.DataFrame, kinds: dict[str, str], exclude: tuple[str, ...] = ()) -> None:
        self.kinds = {n: k for n, k in kinds.items() if n not in exclude}
        self.levels = {n: pd.Index(_as_labels(reference[n]).dropna().unique()) for n, k in self.kinds.items() if not _is_continuous(k)}

    @property
    def categorical_mask(self) -> list[bool]:
        return [n in self.levels and len(self.levels[n]) <= 255 for n in self.kinds]

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(frame), len(self.kinds)), dtype=np.float64)
        for j, (name, kind) in enumerate(self.kinds.items()):
            if name in self.levels:
                codes = self.levels[name].get_indexer(_as_labels(frame[name])).astype(np.float64)
                out[:, j] = np.where(codes < 0, np.nan, codes)
            else:
                out[:, j] = _as_number(frame[name], kind).to_numpy()
        return out


def _booster(task: str, categorical: list[bool], seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor
    return cls(categorical_features=np.asarray(categorical, dtype=bool) if any(categorical) else None, random_state=seed)


def _rows(frame: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    return frame.iloc[np.sort(rng.choice(len(frame), n, replace=False))] if len(frame) > n else frame


def detection_auc(real: pd.DataFrame, synthetic: pd.DataFrame, kinds: dict[str, str] | None = None, *,
                  folds: int = 5, max_rows: int = 20_000, seed: int = 0) -> float:
    """Out-of-fold ROC AUC of a gradient-boosted classifier trained to tell real rows (label 0)
    from synthetic ones (label 1), on equally many of each (at most max_rows); stratified k-fold."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    kinds = _kinds(real, synthetic, kinds)
    rng = np.random.default_rng(seed)
    n = min(len(real), len(synthetic), max_rows)
    if n < 2 * folds:
        raise DataError(f"detection needs at least {2 * folds} rows of each table, got {len(real)} real and {len(synthetic)} synthetic")
    r, s = _rows(real, n, rng), _rows(synthetic, n, rng)
    features = _Features(pd.concat([r, s], ignore_index=True), kinds)
    x = np.concatenate([features(r), features(s)])
    y = np.r_[np.zeros(n), np.ones(n)]
    proba = cross_val_predict(_booster("classification", features.categorical_mask, seed), x, y,
                              cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba")[:, 1]
    return float(roc_auc_score(y, proba))


def ml_efficacy(synthetic: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame, target: str,
                kinds: dict[str, str] | None = None, *, seed: int = 0) -> dict[str, Any]:
    """Machine-learning efficacy for predicting `target` from the other columns: a gradient-boosted
    model trained on the synthetic rows (TSTR) and one trained on the real training rows (TRTR),
    both scored on the real `test` rows. A discrete target gives accuracy and ROC AUC (one-vs-rest
    macro average for several classes), a numeric one R^2. Rows whose target is missing are dropped."""
    from sklearn.metrics import accuracy_score, r2_score, roc_auc_score

    kinds = _kinds(train, synthetic, kinds)
    if target not in kinds:
        raise DataError(f"no target column {target!r}; columns are {', '.join(kinds)}")
    task = "regression" if _is_continuous(kinds[target]) else "classification"
    features = _Features(train, kinds, exclude=(target,))
    classes = _Features(train, {target: kinds[target]})  # target values -> class codes 0..K-1
    test = test[test[target].notna()]

    def labels(frame: pd.DataFrame) -> np.ndarray:
        if task == "regression":
            return _as_number(frame[target], kinds[target]).to_numpy()
        return classes(frame)[:, 0]

    y_test = labels(test)
    keep = np.isfinite(y_test)
    x_test, y_test = features(test)[keep], y_test[keep]
    result: dict[str, Any] = {"target": target, "task": task, "n_test": int(len(y_test))}
    for name, frame in (("trtr", train), ("tstr", synthetic)):
        y = labels(frame)
        ok = np.isfinite(y)
        x, y = features(frame)[ok], y[ok]
        if task == "classification" and len(np.unique(y)) < 2:
            result[f"{name}_accuracy"] = result[f"{name}_roc_auc"] = math.nan
            continue
        model = _booster(task, features.categorical_mask, seed).fit(x, y)
        if task == "regression":
            result[f"{name}_r2"] = float(r2_score(y_test, model.predict(x_test)))
            continue
        result[f"{name}_accuracy"] = float(accuracy_score(y_test, model.predict(x_test)))
        # classes missing from this training set get probability 0
        n_classes = len(classes.levels[target])
        proba = np.zeros((len(x_test), n_classes))
        proba[:, model.classes_.astype(int)] = model.predict_proba(x_test)
        present = np.unique(y_test).astype(int)
        if len(present) < 2:
            result[f"{name}_roc_auc"] = math.nan
        elif n_classes == 2:
            result[f"{name}_roc_auc"] = float(roc_auc_score(y_test, proba[:, 1]))
        else:
            p = proba[:, present] / np.clip(proba[:, present].sum(1, keepdims=True), 1e-12, None)
            result[f"{name}_roc_auc"] = float(roc_auc_score(y_test, p, multi_class="ovr", average="macro", labels=present))
    return result


# -- Privacy ---------------------------------------------------------------------------------------
class _Distances:
    """Rows -> points where the Euclidean distance is a sum of per-column mismatches: numbers (and
    datetimes) scaled to [0, 1] by the training range, a missing value a coordinate of its own;
    discrete columns one-hot / sqrt(2), so two different categories are 1 apart."""

    def __init__(self, train: pd.DataFrame, kinds: dict[str, str]) -> None:
        self.kinds = kinds
        self.ranges = {}
        self.levels = {}
        for name, kind in kinds.items():
            if _is_continuous(kind):
                v = _as_number(train[name], kind)
                lo, hi = (float(v.min()), float(v.max())) if v.notna().any() else (0.0, 1.0)
                self.ranges[name] = (lo, hi - lo if hi > lo else 1.0)
            else:
                self.levels[name] = pd.Index(_as_labels(train[name]).dropna().unique())

    def __call__(self, frame: pd.DataFrame) -> torch.Tensor:
        parts = []
        for name, kind in self.kinds.items():
            if name in self.ranges:
                lo, width = self.ranges[name]
                v = ((_as_number(frame[name], kind) - lo) / width).to_numpy()
                parts += [np.nan_to_num(v, nan=0.0)[:, None], np.isnan(v)[:, None].astype(np.float64)]
            else:
                codes = self.levels[name].get_indexer(_as_labels(frame[name]))
                onehot = np.zeros((len(frame), len(self.levels[name]) + 1))
                onehot[np.arange(len(frame)), np.where(codes < 0, len(self.levels[name]), codes)] = 1.0 / math.sqrt(2.0)
                parts.append(onehot)
        return torch.from_numpy(np.concatenate(parts, axis=1))


def _closest(a: torch.Tensor, b: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """min_j ||a_i - b_j|| for every row a_i (N,), in chunks so N x M never sits in memory whole."""
    return torch.cat([torch.cdist(a[i:i + chunk], b).min(1).values for i in range(0, len(a), chunk)])


def _copies(frame: pd.DataFrame, train: pd.DataFrame) -> float:
    """Share of rows of `frame` equal, column by column, to some row of `train` (missing == missing)."""
    def keys(f: pd.DataFrame) -> pd.Series:
        return pd.util.hash_pandas_object(f.astype(object).where(f.notna(), None).astype(str), index=False)

    return float(keys(frame).isin(set(keys(train))).mean())


def privacy(synthetic: pd.DataFrame, train: pd.DataFrame, holdout: pd.DataFrame, kinds: dict[str, str] | None = None, *,
            max_rows: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Distances to the closest record (DCR) in the training rows (`_Distances` units).

    dcr_synthetic / dcr_holdout: median DCR of synthetic rows / of held-out real rows (a generator
    that does not copy is no closer than real unseen rows: dcr_ratio = their quotient >= 1);
    closer_to_train: share of synthetic rows nearer to a training row than to any held-out row,
    with as many training as held-out rows (0.5 when the model learned nothing particular to its
    training rows); exact_copies: share of synthetic rows equal to a training row, beside
    holdout_exact_copies, the same share for real held-out rows (tables with repeated rows have some)."""
    kinds = _kinds(train, synthetic, kinds)
    rng = np.random.default_rng(seed)
    synthetic, holdout = _rows(synthetic, max_rows, rng), _rows(holdout, max_rows, rng)
    points = _Distances(train, kinds)
    t, s, h = points(train), points(synthetic), points(holdout)
    dcr_s, dcr_h = _closest(s, t), _closest(h, t)
    t_equal = t[torch.from_numpy(rng.choice(len(t), min(len(t), len(h)), replace=False))]
    closer = (_closest(s, t_equal) < _closest(s, h)).double().mean()
    med_s, med_h = float(np.median(dcr_s.numpy())), float(np.median(dcr_h.numpy()))  # torch.median is the lower middle value
    return {"dcr_synthetic": med_s, "dcr_holdout": med_h,
            "dcr_ratio": med_s / med_h if med_h > 0 else (math.inf if med_s > 0 else 1.0),
            "closer_to_train": float(closer), "exact_copies": _copies(synthetic, train),
            "holdout_exact_copies": _copies(holdout, train)}


def table_metrics(synthetic: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame, kinds: dict[str, str] | None = None, *,
                  target: str | None = None, seed: int = 0) -> tuple[dict[str, Any], TableQuality]:
    """Every measure above of `synthetic` rows drawn by a model trained on `train`, with `test` as
    real rows it never saw: quality and detection against the training rows, and the same for the
    held-out rows as the reference a model can reach ("holdout_" keys: what a second real sample
    scores); efficacy for `target` (skipped when None), trained on synthetic or training rows and
    tested on `test`; privacy of synthetic against held-out rows. Returns the flat numbers (efficacy
    as a nested dict) and the synthetic table's quality report (for plots)."""
    kinds = _kinds(train, synthetic, kinds)
    quality, reference = quality_report(train, synthetic, kinds), quality_report(train, test, kinds)
    out: dict[str, Any] = {**quality.summary(), **{f"holdout_{k}": v for k, v in reference.summary().items()},
                           "detection_auc": detection_auc(train, synthetic, kinds, seed=seed),
                           "holdout_detection_auc": detection_auc(train, test, kinds, seed=seed)}
    if target is not None:
        out["efficacy"] = ml_efficacy(synthetic, train, test, target, kinds, seed=seed)
    out.update(privacy(synthetic, train, test, kinds, seed=seed))
    return out, quality
