"""benchmarks/balance.py: the cut training split and the balanced test set it builds, and a --quick
run through `genlab balance` on a table and on images (with imbalanced-learn's oversamplers where it
is installed)."""

from __future__ import annotations

import json

import numpy as np

import genlab


def test_cut_and_balanced_test_set(repo_script):
    script = repo_script("benchmarks/balance.py")
    data = genlab.data.load("digits")
    train, test = script.cut_and_test(data, "3", 0.02)
    labels = data.labels.numpy()
    full = np.bincount(labels[data.split("train").labels.numpy()], minlength=10)
    counts = np.bincount(labels[train], minlength=10)
    assert counts[3] == round(0.02 * full[3]) and np.array_equal(np.delete(counts, 3), np.delete(full, 3))
    assert len(set(np.bincount(labels[test], minlength=10))) == 1  # every class as often
    held = set(data._splits["val"].tolist()) | set(data._splits["test"].tolist())
    assert set(test.tolist()) <= held and not set(train.tolist()) & held


def test_quick_run(tmp_path, repo_script):
    script = repo_script("benchmarks/balance.py")
    out = tmp_path / "r.json"
    assert script.main(["--quick", "--cases", "breast_cancer,digits", "--threads", "1", "--image-model", "cgan",
                        "--set", "hidden=16", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    table = results["breast_cancer"]
    malignant = int((genlab.data.load("breast_cancer").split("train").labels == 0).sum())
    assert table["counts"][0] == round(0.05 * malignant)
    rows = table["rows"]
    balanced = table["counts"][1] * 2
    assert rows["genlab/logistic"]["rows"] == balanced and rows["imbalanced/boosting"]["rows"] == sum(table["counts"])
    for r in rows.values():
        assert 0.0 <= r["balanced_accuracy"] <= 1.0 and 0.0 <= r["minority_f1"] <= 1.0
    assert results["digits"]["rows"]["genlab/cnn"]["rows"] == 10 * max(results["digits"]["counts"])
