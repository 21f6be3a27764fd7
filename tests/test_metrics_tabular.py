"""Synthetic-table measures: SDMetrics' quality definitions (by hand and against sdmetrics itself),
detection, machine-learning efficacy and distance-to-closest-record privacy."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp, pearsonr

from genlab.data.tables import column_kinds
from genlab.errors import DataError
from genlab.metrics.tabular import (
    column_shapes,
    detection_auc,
    ml_efficacy,
    pair_trends,
    privacy,
    quality_report,
    table_metrics,
)

TABLES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "tables"


def gaussian_table(n: int, seed: int, shift: float = 0.0, rho: float = 0.8) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    b = rho * a + math.sqrt(1 - rho**2) * rng.normal(size=n) + shift
    colour = np.where(a + rng.normal(0, 0.5, n) > 0, "red", "blue")
    return pd.DataFrame({"a": a, "b": b, "colour": colour, "count": rng.integers(0, 4, n)})


def test_column_shapes_are_ks_and_tv_complements():
    real = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, np.nan], "c": ["u", "u", "v", "w", None]})
    fake = pd.DataFrame({"x": [0.5, 1.0, 5.0], "c": ["u", "v", "z"]})
    shapes = column_shapes(real, fake).set_index("column")
    assert shapes.loc["x", "score"] == pytest.approx(1 - ks_2samp([0, 1, 2, 3], [0.5, 1, 5]).statistic)
    # real (u 1/2, v 1/4, w 1/4) vs fake (u, v, z a third each): TV = (1/6 + 1/12 + 1/4 + 1/3) / 2
    assert shapes.loc["c", "score"] == pytest.approx(1 - (1 / 6 + 1 / 12 + 1 / 4 + 1 / 3) / 2)
    assert list(shapes["metric"]) == ["KSComplement", "TVComplement"]


def test_pair_trends_by_hand():
    real, fake = gaussian_table(400, 0), gaussian_table(300, 1, rho=0.2)
    pairs = pair_trends(real, fake).set_index(["column_1", "column_2"])
    rho_r, rho_s = pearsonr(real.a, real.b).statistic, pearsonr(fake.a, fake.b).statistic
    row = pairs.loc[("a", "b")]
    assert row.metric == "CorrelationSimilarity" and row.score == pytest.approx(1 - abs(rho_r - rho_s) / 2)
    assert row.counts == (abs(rho_r) > 0.5)
    # numeric x discrete: the numeric column cut into 10 equal-width bins over its own table's range
    def joint(f):
        edges = np.histogram_bin_edges(f.a, bins=10)
        return pd.crosstab(np.digitize(f.a, edges), f.colour, normalize=True).stack()
    p, q = joint(real).align(joint(fake), fill_value=0)
    row = pairs.loc[("a", "colour")]
    assert row.metric == "ContingencySimilarity" and row.score == pytest.approx(1 - 0.5 * (p - q).abs().sum())
    assert 0.3 < row.real_association <= 1 and row.counts  # colour is a noisy sign of a
    assert len(pairs) == 6


def test_quality_report_of_the_same_distribution_beats_a_different_one():
    real = gaussian_table(2000, 0)
    same, other = gaussian_table(2000, 1), gaussian_table(2000, 2, shift=1.5, rho=-0.5)
    good, bad = quality_report(real, same, shared_bins=True), quality_report(real, other, shared_bins=True)
    assert good.column_shapes > 0.95 and good.pair_trends > 0.95
    assert bad.column_shapes < good.column_shapes - 0.05 and bad.pair_trends < good.pair_trends - 0.2
    assert good.score == pytest.approx((good.column_shapes + good.pair_trends) / 2)
    # SDMetrics bins each table over its own range: the tails of two samples differ, so do all bins
    assert quality_report(real, same).pair_trends < good.pair_trends - 0.1


def test_quality_report_matches_sdmetrics():
    pytest.importorskip("sdmetrics")
    from sdmetrics.reports.single_table import QualityReport

    if not (TABLES / "penguins.csv").is_file():
        pytest.skip("../shared/datasets/tables/penguins.csv is not here")
    real = pd.read_csv(TABLES / "penguins.csv")
    real = real.astype({c: object for c in real.columns if not pd.api.types.is_numeric_dtype(real[c])})
    rng = np.random.default_rng(1)
    fake = real.sample(200, random_state=2, replace=True).reset_index(drop=True)
    for c in fake.columns[::2]:
        fake[c] = fake[c].sample(frac=1, random_state=3).to_numpy()
    fake["bill_depth_mm"] += rng.normal(0, 1, len(fake))
    kinds = column_kinds(real)
    sdtypes = {"continuous": "numerical", "integer": "numerical", "categorical": "categorical"}
    report = QualityReport()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.generate(real, fake, {"columns": {c: {"sdtype": sdtypes[k]} for c, k in kinds.items()}}, verbose=False)
    ours = quality_report(real, fake, kinds)
    theirs = report.get_properties().set_index("Property")["Score"]
    assert ours.column_shapes == pytest.approx(theirs["Column Shapes"], abs=1e-12)
    assert ours.pair_trends == pytest.approx(theirs["Column Pair Trends"], abs=1e-12)
    assert ours.score == pytest.approx(report.get_score(), abs=1e-12)


def test_detection_auc_tells_apart_only_what_differs():
    real = gaussian_table(1500, 0)
    assert abs(detection_auc(real, gaussian_table(1500, 1)) - 0.5) < 0.06
    assert detection_auc(real, gaussian_table(1500, 2, shift=3.0)) > 0.97


def test_ml_efficacy_tstr_equals_trtr_when_trained_on_the_same_rows():
    train, test = gaussian_table(600, 0), gaussian_table(300, 1)
    out = ml_efficacy(train.copy(), train, test, "colour")
    assert out["task"] == "classification" and out["tstr_accuracy"] == out["trtr_accuracy"] > 0.75
    shuffled = train.assign(colour=train.colour.sample(frac=1, random_state=0).to_numpy())
    worse = ml_efficacy(shuffled, train, test, "colour")
    assert worse["tstr_roc_auc"] < 0.65 < out["trtr_roc_auc"]  # labels unrelated to the rows teach nothing
    r2 = ml_efficacy(train, train, test, "b")
    assert r2["task"] == "regression" and r2["tstr_r2"] == r2["trtr_r2"] > 0.4  # rho^2 = 0.64 is the ceiling
    with pytest.raises(DataError, match="no target column 'nope'"):
        ml_efficacy(train, train, test, "nope")


def test_privacy_flags_copies_and_not_fresh_draws():
    train, holdout = gaussian_table(800, 0), gaussian_table(800, 1)
    copied = privacy(train.copy(), train, holdout)
    assert copied["exact_copies"] == 1.0 and copied["dcr_synthetic"] == 0.0 and copied["dcr_ratio"] == 0.0
    assert copied["closer_to_train"] == 1.0 and copied["holdout_exact_copies"] == 0.0
    fresh = privacy(gaussian_table(800, 2), train, holdout)
    assert fresh["exact_copies"] == 0.0 and 0.8 < fresh["dcr_ratio"] < 1.25 and abs(fresh["closer_to_train"] - 0.5) < 0.06


def test_privacy_distance_units():
    """Numbers count by their share of the training range, a different category counts 1."""
    train = pd.DataFrame({"x": [0.0, 10.0], "c": ["a", "b"]})
    synthetic = pd.DataFrame({"x": [2.0, 0.0], "c": ["a", "b"]})
    out = privacy(synthetic, train, pd.DataFrame({"x": [5.0], "c": ["a"]}))
    # row 1: x 0.2 of the range from (0, a); row 2: (0, b) is 1 from (0, a) and 1 from (10, b)
    assert out["dcr_synthetic"] == pytest.approx((0.2 + 1.0) / 2)
    assert out["dcr_holdout"] == pytest.approx(0.5)


def test_table_metrics_on_a_table_with_missing_values():
    if not (TABLES / "penguins.csv").is_file():
        pytest.skip("../shared/datasets/tables/penguins.csv is not here")
    real = pd.read_csv(TABLES / "penguins.csv")
    train, test = real.iloc[:250], real.iloc[250:]
    out, quality = table_metrics(train.sample(250, replace=True, random_state=0), train, test, target="species")
    assert {"quality", "detection_auc", "efficacy", "dcr_ratio", "exact_copies"} <= set(out)
    assert out["exact_copies"] == 1.0 and out["efficacy"]["tstr_accuracy"] > 0.9
    assert list(quality.columns["column"]) == list(real.columns)


def test_mismatched_tables_fail_clearly():
    with pytest.raises(DataError, match="columns .* differ"):
        quality_report(gaussian_table(10, 0), gaussian_table(10, 0).drop(columns="a"))
