"""benchmarks/anomaly.py and benchmarks/features.py: the corrupted rows of the anomaly tabular case, the
one-class folds, a --quick run of a GAN's two scores against the PCA anchor (PyOD's detectors are
benchmark-only and skipped), and a --quick linear probe."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from genlab.apps import anomaly


def test_corrupted_rows_take_one_value_from_another_row(repo_script):
    script = repo_script("benchmarks/anomaly.py")
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"price": rng.normal(size=400), "cut": rng.choice(["a", "b", "c"], 400), "carat": rng.uniform(size=400)})
    corrupted, truth = script.corrupt_rows(frame, 0.05, seed=0)
    assert truth.sum() == 20 and truth.shape == (400,)
    changed = (corrupted != frame).sum(axis=1).to_numpy()
    assert changed[truth == 0].max() == 0 and changed[truth == 1].max() <= 1  # a donor may hold the same value
    for column in frame.columns:  # every new value is one the column holds elsewhere
        assert set(corrupted[column]) <= set(frame[column])


def test_one_class_folds_and_a_quick_run(tmp_path, repo_script, monkeypatch):
    script = repo_script("benchmarks/anomaly.py")
    folds = script.digit_folds("digits-oneclass", "", quick=True)
    for c, fold in enumerate(folds):
        assert set(fold.normal.labels.tolist()) == {c}
        assert fold.truth.mean() > 0.8 and len(fold.truth) == len(fold.tested_features)
    monkeypatch.setattr(anomaly, "INVERSION_ENCODER_STEPS", 50)
    out = tmp_path / "r.json"
    assert script.main(["--quick", "--cases", "digits-oneclass", "--genlab-models", "dcgan", "--pyod", "none",
                        "--threads", "1", "--json", str(out)]) == 0
    case = json.loads(out.read_text())["cases"]["digits-oneclass"]
    assert set(case) == {"genlab dcgan discriminator", "genlab dcgan inversion", "sklearn PCA reconstruction (90%)"}
    for method in case.values():
        assert len(method["folds"]) == 2 and all(0.0 <= f["auroc"] <= 1.0 for f in method["folds"])
    assert case["sklearn PCA reconstruction (90%)"]["auroc"] > 0.95  # one digit against nine: PCA's anchor saturates


def test_features_benchmark_quick_run(tmp_path, repo_script):
    script = repo_script("benchmarks/features.py")
    out = tmp_path / "f.json"
    assert script.main(["--quick", "--models", "ae", "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert set(rows) == {"raw pixels", "ae codes", "PCA, 8 components"}
    assert rows["ae codes"]["dims"] == rows["PCA, 8 components"]["dims"] == 8 and rows["raw pixels"]["dims"] == 64
    assert rows["raw pixels"]["accuracy"] > 0.9  # a linear classifier on the 8x8 digits' pixels
