"""Anomaly detection side by side: genlab's detectors (`genlab.apps.anomaly`, each a generative model
trained on normal data and one of its scores) against PyOD's AutoEncoder, VAE, DeepSVDD,
IsolationForest, KDE, PCA and OCSVM at their defaults, and scikit-learn's PCA reconstruction error
(90% of the variance), on the same splits, by AUROC and average precision (anomalies are the
positive class; every score is higher = more anomalous).

PyOD is not a genlab dependency. Install it in the benchmark virtualenv:

    python3 -m venv .bench-venv && .bench-venv/bin/pip install -r requirements-cpu.txt -e . pyod
    .bench-venv/bin/python benchmarks/anomaly.py --cases digits-loo,digits-oneclass,breast_cancer,diamonds
    .bench-venv/bin/python benchmarks/anomaly.py --cases mnist-oneclass,fashion-oneclass,fashion-vs-mnist \
        --data-root ../shared/datasets

(checked with PyOD 3.6.7). Without it the script says so and measures genlab alone.

Cases (genlab's seeded splits, `genlab.data.load(..., seed=0)`; "held-out" = the val and test splits):
- digits-loo: leave one class out; train on the train split's other nine digits, test on the held-out
  images, the left-out digit is the anomaly; one fold per digit.
- digits-oneclass: train on one digit's training images; every other digit is an anomaly.
- mnist-oneclass, fashion-oneclass: the Deep SVDD protocol (Ruff et al. 2018): train on one class of
  the training split, test on the 10,000 test images, the nine other classes are anomalies.
- fashion-vs-mnist: out of distribution (Nalisnick et al. 2019): train on all of Fashion-MNIST, test
  its 10,000 test images (normal) with MNIST's 10,000 (anomalies); likelihoods raw and corrected.
- breast_cancer: train on the benign tumours of the train split, test the held-out ones; malignant
  is the anomaly. The diagnosis column is dropped from the features.
- diamonds: train on the train split; in the held-out rows 5% are corrupted (seeded): one column of
  each is replaced by the value of a random other row (numbers and categories alike), so every
  corrupted value is plausible alone and only its row's other columns give it away.

genlab's models train with their defaults unless --steps (or the case's budget for the 28x28 cases,
--image-steps); PyOD's detectors use their own preprocessing, on flattened pixels or on standardised
numbers with one-hot categories (fitted on the normal training rows), without the features that are
constant on the normal data (PyOD's PCA scores every sample inf otherwise); KDE and OCSVM fit on at most
10,000 normal rows (--kernel-rows; diamonds and Fashion-MNIST have more). Fit and score times are wall
seconds with --threads threads; the score time of the 28x28 cases is the time to score the 10,000
test images (the issue's speed goal: under a minute on 2 cores for every non-diffusion score).

    .bench-venv/bin/python benchmarks/anomaly.py --quick            # smoke run: tiny budgets; numbers mean nothing
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import genlab  # noqa: E402
from genlab.apps.anomaly import detector  # noqa: E402
from genlab.data.tables import table_dataset  # noqa: E402
from _common import add_run_options, environment, format_table, write_json  # noqa: E402

PYOD_METHODS = ("AutoEncoder", "VAE", "DeepSVDD", "IsolationForest", "KDE", "PCA", "OCSVM")
# the "PCA reconstruction" anchor: scikit-learn's PCA keeping 90% of the variance, scored by the
# squared reconstruction error (PyOD's PCA at its defaults weighs every component by 1 / its variance)
PCA_VARIANCE = 0.9
KERNEL_METHODS = ("KDE", "OCSVM")  # fitted on at most --kernel-rows normal rows (seeded draw)
CASE_NAMES = ("digits-loo", "digits-oneclass", "mnist-oneclass", "fashion-oneclass", "fashion-vs-mnist", "breast_cancer", "diamonds")
CORRUPTED_SHARE = 0.05

# genlab's detectors per kind of data: model name -> (model options, [(score, correction), ...]); the
# first three of each kind run by default (--genlab-models picks others)
GENLAB_IMAGE = {
    "ae": ({}, [("reconstruction", "none")]),
    "vae": ({}, [("bound", "none"), ("bound", "complexity"), ("reconstruction", "none")]),
    "pixelcnn": ({}, [("nll", "none"), ("nll", "complexity")]),
    "dcgan": ({}, [("discriminator", "none"), ("inversion", "none")]),
    "ddpm": ({}, [("denoising", "none")]),
}
GENLAB_TABLE = {
    "ae": ({}, [("reconstruction", "none")]),
    "vae": ({}, [("bound", "none"), ("reconstruction", "none")]),
    "maf": ({}, [("nll", "none")]),
    "made": ({}, [("nll", "none")]),
}


@dataclasses.dataclass
class Fold:
    """One train / test split: genlab trains on `normal` (a Dataset) and scores `tested` (N, *shape);
    PyOD fits on `normal_features` (M, F) and scores `tested_features` (N, F); truth (N,) 1 = anomaly."""

    name: str
    normal: Any
    tested: torch.Tensor
    truth: np.ndarray
    normal_features: np.ndarray
    tested_features: np.ndarray


# -- the cases -------------------------------------------------------------------------------------------------
def _held_out(data) -> np.ndarray:
    return np.concatenate([data._splits["val"].numpy(), data._splits["test"].numpy()])


def _image_folds(data, train: np.ndarray, tested: np.ndarray, classes: list[int], one_class: bool, fold_names: list[str]) -> list[Fold]:
    labels = data.labels.numpy()
    x_tested = data.subset(torch.as_tensor(tested)).tensors()[0]
    folds = []
    for c, name in zip(classes, fold_names):
        keep = train[labels[train] == c] if one_class else train[labels[train] != c]
        normal = data.subset(torch.as_tensor(keep))
        truth = (labels[tested] != c) if one_class else (labels[tested] == c)
        folds.append(Fold(name, normal, x_tested, truth.astype(int), normal.tensors()[0].flatten(1).numpy(), x_tested.flatten(1).numpy()))
    return folds


def digit_folds(case: str, root: str, quick: bool) -> list[Fold]:
    data = genlab.data.load("digits", seed=0)
    classes = [0, 1] if quick else list(range(10))
    return _image_folds(data, data._splits["train"].numpy(), _held_out(data), classes, case == "digits-oneclass",
                        [f"digit {c}" for c in classes])


def one_class_folds(case: str, root: str, quick: bool) -> list[Fold]:
    data = genlab.data.load("mnist" if case == "mnist-oneclass" else "fashion_mnist", root=root, seed=0)
    classes = [0] if quick else list(range(10))
    tested = data._splits["test"].numpy()
    if quick:
        tested = tested[:500]
    return _image_folds(data, data._splits["train"].numpy(), tested, classes, True, [data.spec.class_names[c] for c in classes])


def out_of_distribution_folds(case: str, root: str, quick: bool) -> list[Fold]:
    fashion = genlab.data.load("fashion_mnist", root=root, seed=0)
    digits = genlab.data.load("mnist", root=root, seed=0)
    normal = fashion.split("train")
    n = 500 if quick else None
    inside, outside = fashion.split("test").tensors()[0][:n], digits.split("test").tensors()[0][:n]
    tested = torch.cat([inside, outside])
    truth = np.r_[np.zeros(len(inside), int), np.ones(len(outside), int)]
    features = normal.tensors()[0].flatten(1).numpy()
    return [Fold("MNIST as anomalies", normal, tested, truth, features, tested.flatten(1).numpy())]


def _table_fold(name: str, frame: pd.DataFrame, train: np.ndarray, tested_frame: pd.DataFrame, truth: np.ndarray) -> Fold:
    """genlab's table dataset of the training rows and the tested rows encoded by its encoder; PyOD's
    standardised numbers and one-hot categories fitted on the training rows."""
    normal = table_dataset(frame.iloc[train].reset_index(drop=True), name=name, seed=0)
    normal = normal.subset(torch.arange(len(normal)))  # every training row trains (no splits)
    tested = normal.encoder.encode(tested_frame)
    features = _pyod_table_features(frame.iloc[train])
    return Fold(name, normal, tested, truth, features.transform(frame.iloc[train]), features.transform(tested_frame))


def _pyod_table_features(frame: pd.DataFrame):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    other = [c for c in frame.columns if c not in numeric]
    return ColumnTransformer([
        ("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("categories", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                     OneHotEncoder(handle_unknown="ignore", sparse_output=False)), other),
    ]).fit(frame)


def breast_cancer_folds(case: str, root: str, quick: bool) -> list[Fold]:
    data = genlab.data.load("breast_cancer", seed=0)
    target = data.spec.target
    frame = data.frame.drop(columns=[target])
    malignant = (data.frame[target].astype(str) == "malignant").to_numpy()
    train = data._splits["train"].numpy()
    train = train[~malignant[train]]
    tested = _held_out(data)
    return [_table_fold("breast_cancer benign", frame, train, frame.iloc[tested].reset_index(drop=True), malignant[tested].astype(int))]


def corrupt_rows(frame: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A copy of frame with `share` of its rows corrupted, and the 0/1 truth: in each corrupted row,
    one column (chosen uniformly) takes the value of another random row."""
    rng = np.random.default_rng(seed)
    corrupted = frame.copy().reset_index(drop=True)
    rows = rng.choice(len(frame), size=max(1, round(share * len(frame))), replace=False)
    for row in rows:  # a few hundred rows: the loop is the benchmark's set-up, not a hot path
        column = corrupted.columns[rng.integers(len(corrupted.columns))]
        donor = rng.integers(len(frame))
        corrupted.loc[row, column] = frame[column].iloc[donor]
    truth = np.zeros(len(frame), int)
    truth[rows] = 1
    return corrupted, truth


def diamonds_folds(case: str, root: str, quick: bool) -> list[Fold]:
    data = genlab.data.load(str(Path(root) / "tables" / "diamonds.csv"), seed=0)
    frame = data.frame
    train, tested = data._splits["train"].numpy(), _held_out(data)
    if quick:
        train, tested = train[:2000], tested[:1000]
    tested_frame, truth = corrupt_rows(frame.iloc[tested].reset_index(drop=True), CORRUPTED_SHARE, seed=0)
    return [_table_fold("diamonds", frame, train, tested_frame, truth)]


CASES: dict[str, Callable[[str, str, bool], list[Fold]]] = {
    "digits-loo": digit_folds, "digits-oneclass": digit_folds, "mnist-oneclass": one_class_folds,
    "fashion-oneclass": one_class_folds, "fashion-vs-mnist": out_of_distribution_folds,
    "breast_cancer": breast_cancer_folds, "diamonds": diamonds_folds,
}


# -- the detectors ---------------------------------------------------------------------------------------------
def pyod_detector(name: str, features: int):
    from pyod.models.auto_encoder import AutoEncoder
    from pyod.models.deep_svdd import DeepSVDD
    from pyod.models.iforest import IForest
    from pyod.models.kde import KDE
    from pyod.models.ocsvm import OCSVM
    from pyod.models.pca import PCA
    from pyod.models.vae import VAE

    return {"AutoEncoder": lambda: AutoEncoder(verbose=0), "VAE": lambda: VAE(verbose=0),
            "DeepSVDD": lambda: DeepSVDD(n_features=features, verbose=0, random_state=0),
            "IsolationForest": lambda: IForest(random_state=0), "KDE": KDE, "PCA": PCA, "OCSVM": OCSVM}[name]()


def measure(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=np.inf)  # a NaN counts as most anomalous
    scores = np.clip(scores, -1e300, 1e300)
    return float(roc_auc_score(truth, scores)), float(average_precision_score(truth, scores))


def run_pca_reconstruction(fold: Fold) -> dict[str, Any]:
    from sklearn.decomposition import PCA

    start = time.perf_counter()
    pca = PCA(n_components=PCA_VARIANCE, random_state=0).fit(fold.normal_features)
    fitted = time.perf_counter()
    scores = ((fold.tested_features - pca.inverse_transform(pca.transform(fold.tested_features))) ** 2).sum(1)
    auroc, ap = measure(scores, fold.truth)
    return {"auroc": auroc, "ap": ap, "fit_s": fitted - start, "score_s": time.perf_counter() - fitted}


def run_pyod(fold: Fold, name: str, max_rows: int) -> dict[str, Any]:
    # features constant on the normal data (the digits' blank border pixels) dropped: PyOD's PCA divides
    # by every component's variance, and scores inf for all samples where one is zero
    varying = fold.normal_features.std(0) > 0
    normal, tested = fold.normal_features[:, varying], fold.tested_features[:, varying]
    if name in KERNEL_METHODS and len(normal) > max_rows:  # their cost grows as the rows squared
        normal = normal[np.random.default_rng(0).choice(len(normal), max_rows, replace=False)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        model = pyod_detector(name, normal.shape[1])
        model.fit(normal)
        fitted = time.perf_counter()
        scores = model.decision_function(tested)
        scored = time.perf_counter()
    auroc, ap = measure(scores, fold.truth)
    return {"auroc": auroc, "ap": ap, "fit_s": fitted - start, "score_s": scored - fitted}


def run_genlab(fold: Fold, model_name: str, options: dict[str, Any], scores: list[tuple[str, str]],
               train_options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    torch.manual_seed(0)
    start = time.perf_counter()
    model = genlab.create(model_name, data=fold.normal, **options)
    genlab.fit(model, fold.normal, progress=False, sample_every=0, checkpoint_every=0, tensorboard=False, **train_options)
    fit_s = time.perf_counter() - start
    results = {}
    for score, correction in scores:
        found = detector(model.eval(), score, correction=correction, batch_size=500)
        began = time.perf_counter()
        if found.score.prepare is not None:  # what the score learns from normal data (the inversion's encoder) is fitting
            found.fit(fold.normal)
        prepared = time.perf_counter()
        values = found.anomaly_scores(fold.tested).double().numpy()
        auroc, ap = measure(values, fold.truth)
        label = f"{model_name} {score}" + ("" if correction == "none" else f" +{correction}")
        results[label] = {"auroc": auroc, "ap": ap, "fit_s": fit_s + prepared - began, "score_s": time.perf_counter() - prepared}
    return results


# -- scoring speed ---------------------------------------------------------------------------------------------
# (model, score): every non-diffusion score, and the denoising score for reference; the networks are the
# models' defaults at 28x28 (the "cpu" size preset on a CPU), untrained: the time does not depend on the weights
SPEED_SCORES = (("ae", "reconstruction"), ("vae", "bound"), ("vae", "reconstruction"), ("pixelcnn", "nll"),
                ("realnvp", "nll"), ("glow", "nll"), ("vq-vae", "reconstruction"), ("dcgan", "discriminator"),
                ("dcgan", "inversion"), ("ddpm", "denoising"))


def scoring_speed(root: str, n: int, quick: bool) -> dict[str, dict[str, float]]:
    """Seconds to score n MNIST test images with each of SPEED_SCORES (PNG complexity separately)."""
    data = genlab.data.load("mnist", root=root, seed=0)
    x = data.split("test").tensors()[0][: 64 if quick else n]
    results = {}
    for name, score in SPEED_SCORES:
        torch.manual_seed(0)
        model = genlab.create(name, data=data).eval()
        found = detector(model, score, batch_size=500)
        if found.score.prepare is not None:  # the inversion's encoder, trained on normal data before scoring
            found.fit(data.split("train").tensors()[0][:1000])
        found.anomaly_scores(x[:8])  # warm-up
        # the scores of tens of network calls per sample (denoising) on a tenth, reported per image
        part = x if found.score.cost(model) == 0 else x[: max(8, len(x) // 10)]
        start = time.perf_counter()
        found.anomaly_scores(part)
        seconds = time.perf_counter() - start
        results[f"{name} {score}"] = {"images": len(part), "seconds": seconds, "images_per_s": len(part) / seconds,
                                      "seconds_per_10000": 10000 * seconds / len(part)}
        print(f"speed: {name} {score}: {len(part)} images in {seconds:.1f} s", flush=True)
    from genlab.apps.anomaly import compressed_bits

    start = time.perf_counter()
    compressed_bits(x)
    seconds = time.perf_counter() - start
    results["PNG length (complexity correction)"] = {"images": len(x), "seconds": seconds, "images_per_s": len(x) / seconds,
                                                     "seconds_per_10000": 10000 * seconds / len(x)}
    return results


# -- the run ---------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="digits-loo,digits-oneclass,breast_cancer,diamonds",
                        help=f"comma-separated, from {', '.join(CASE_NAMES)}")
    parser.add_argument("--data-root", default="../shared/datasets", help="where mnist, fashion_mnist and tables/diamonds.csv are")
    parser.add_argument("--genlab-models", default=None, help="comma-separated genlab models (default: ae, vae and pixelcnn "
                        f"for images, ae, vae and maf for tables; also {', '.join(list(GENLAB_IMAGE)[3:])} for images, made for tables)")
    parser.add_argument("--pyod", default=",".join(PYOD_METHODS), help="comma-separated PyOD detectors, or 'none'")
    parser.add_argument("--image-steps", type=int, default=1500, help="genlab training steps on the 28x28 cases (default 1500)")
    parser.add_argument("--kernel-rows", type=int, default=10000, metavar="N",
                        help="PyOD's KDE and OCSVM fit on at most N normal rows, a seeded draw (default 10000): their "
                             "cost grows as the rows squared")
    parser.add_argument("--speed", type=int, default=0, metavar="N",
                        help="also time scoring N MNIST test images with every non-diffusion score (the issue asks N=10000)")
    add_run_options(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = [c.strip() for c in args.cases.split(",") if c.strip() and c.strip() != "none"]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASE_NAMES)}")
    pyod_names = [] if args.pyod == "none" else [n.strip() for n in args.pyod.split(",")]
    try:
        import pyod  # noqa: F401
    except ImportError:
        print("PyOD is not installed in this environment: measuring genlab alone (see the docstring to install it)")
        pyod_names = []
    named = [m for m in (args.genlab_models or "").split(",") if m not in ("", "none")]
    if [m for m in named if m not in GENLAB_IMAGE and m not in GENLAB_TABLE]:
        parser.error(f"--genlab-models: no detector set up for {', '.join(m for m in named if m not in GENLAB_IMAGE and m not in GENLAB_TABLE)}; "
                     f"choose from images {', '.join(GENLAB_IMAGE)} or tables {', '.join(GENLAB_TABLE)}")
    model_options = dict(item.split("=", 1) for item in args.set)
    payload: dict[str, Any] = {"settings": vars(args), "environment": environment(), "cases": {}}
    for case in cases:
        folds = CASES[case](case, args.data_root, args.quick)
        kind = folds[0].normal.spec.kind
        catalogue = GENLAB_IMAGE if kind == "image" else GENLAB_TABLE
        chosen = [m for m in args.genlab_models.split(",") if m not in ("", "none")] if args.genlab_models else list(catalogue)[:3]
        if [m for m in chosen if m not in catalogue]:
            print(f"{case}: skipping {', '.join(m for m in chosen if m not in catalogue)} (not set up for {kind} data)")
        chosen = [m for m in chosen if m in catalogue]
        large = kind == "image" and folds[0].normal.spec.shape[-1] >= 16
        train_options: dict[str, Any] = {}
        if args.quick:
            train_options["max_steps"] = 20
        elif args.steps or large:
            train_options["max_steps"] = args.steps or args.image_steps
        if args.batch_size:
            train_options["batch_size"] = args.batch_size
        per_method: dict[str, list[dict[str, Any]]] = {}
        for fold in folds:
            for name in chosen:
                options, scores = catalogue[name]
                for label, result in run_genlab(fold, name, {**options, **model_options}, scores, train_options).items():
                    per_method.setdefault(f"genlab {label}", []).append(result)
                    print(f"{case} / {fold.name}: genlab {label} AUROC {result['auroc']:.3f}", flush=True)
            for name in pyod_names:
                result = run_pyod(fold, name, args.kernel_rows)
                per_method.setdefault(f"PyOD {name}", []).append(result)
                print(f"{case} / {fold.name}: PyOD {name} AUROC {result['auroc']:.3f}", flush=True)
            result = run_pca_reconstruction(fold)
            per_method.setdefault(f"sklearn PCA reconstruction ({PCA_VARIANCE:.0%})", []).append(result)
        summary = {method: {"auroc": float(np.mean([r["auroc"] for r in rows])), "ap": float(np.mean([r["ap"] for r in rows])),
                            "fit_s": float(np.mean([r["fit_s"] for r in rows])), "score_s": float(np.mean([r["score_s"] for r in rows])),
                            "folds": [{"fold": f.name, **r} for f, r in zip(folds, rows)]}
                   for method, rows in per_method.items()}
        payload["cases"][case] = summary
        print(f"\n{case}: {len(folds)} fold(s), {len(folds[0].truth)} tested, {folds[0].truth.mean():.1%} anomalies (first fold)")
        print(format_table(["method", "AUROC", "AP", "fit s", "score s"],
                           [[m, s["auroc"], s["ap"], s["fit_s"], s["score_s"]] for m, s in summary.items()]))
        best = {side: max(((m, s["auroc"]) for m, s in summary.items() if m.startswith("genlab") == (side == "genlab")),
                          key=lambda p: p[1], default=None)
                for side in ("genlab", "PyOD")}  # the peers: PyOD's detectors and scikit-learn's PCA
        if best["genlab"] and best["PyOD"]:
            print(f"best {best['genlab'][0]} {best['genlab'][1]:.3f} vs best {best['PyOD'][0]} {best['PyOD'][1]:.3f}: "
                  f"ratio {best['genlab'][1] / best['PyOD'][1]:.3f}, difference {best['genlab'][1] - best['PyOD'][1]:+.3f}\n")
    if args.speed:
        speed = scoring_speed(args.data_root, args.speed, args.quick)
        payload["speed"] = speed
        print(format_table(["score", "images", "seconds", "s per 10,000"],
                           [[k, v["images"], v["seconds"], v["seconds_per_10000"]] for k, v in speed.items()]))
    write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
