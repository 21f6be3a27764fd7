"""Class balancing measured downstream: a fixed classifier trained on imbalanced data, on the same
data oversampled by imbalanced-learn (random, SMOTE, ADASYN), and on the same data balanced by
`genlab balance` (a class-conditional generator's samples), scored on a balanced held-out test set.

imbalanced-learn is not a genlab dependency. Install it in the benchmark virtualenv:

    python3 -m venv .bench-venv && .bench-venv/bin/pip install -r requirements-cpu.txt -e . imbalanced-learn
    .bench-venv/bin/python benchmarks/balance.py --cases digits,breast_cancer --data-root ../shared/datasets

(checked with imbalanced-learn 0.14.2). Without it the script says so and measures the imbalanced
data and genlab alone.

Each case: genlab's seeded split of the data (`genlab.data.load(..., seed=0)`); the training split
with one class cut to a share of its rows (`keep`, seeded); the held-out rows (val and test splits)
subsampled to the same count in every class (the balanced test set). The cut training split is
written to a file (CSV for tables, .npz for images), balanced by `genlab.apps.balance.balance`
exactly as `genlab balance FILE --out OUT --model MODEL` does (the model trained on every row of the
file, with its defaults unless --steps), and read back. Every method brings each class up to the
largest class's count (imbalanced-learn's "not majority"). Classifiers, the same for every method:
tables: logistic regression and gradient boosting (scikit-learn's HistGradientBoostingClassifier) on
standardised numbers and one-hot categories (median / most-frequent imputation), fitted on the cut
training rows; images: a small CNN (two 3x3 convolutions, max pooling, a hidden layer) trained by
Adam for a fixed number of steps, averaged over --seeds seeds. Measures: balanced accuracy and the
F1 score of the cut class.

    .bench-venv/bin/python benchmarks/balance.py --cases digits --image-model cgan
    .bench-venv/bin/python benchmarks/balance.py --quick        # smoke run: tiny budgets; numbers mean nothing
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import genlab  # noqa: E402
from genlab.apps.balance import balance  # noqa: E402
from _common import add_run_options  # noqa: E402

# name -> kind, genlab.data.load source and options, the class cut (by name), the share of its rows kept
CASES: dict[str, dict[str, Any]] = {
    "digits": {"kind": "image", "source": "digits", "options": {}, "minority": "3", "keep": 0.02},
    "mnist": {"kind": "image", "source": "mnist", "options": {}, "minority": "3", "keep": 0.02},
    "breast_cancer": {"kind": "table", "source": "breast_cancer", "options": {}, "minority": "malignant", "keep": 0.05},
    # Fair is the rarest cut (3% of the rows): kept as it is
    "diamonds": {"kind": "table", "source": "tables/diamonds.csv", "options": {"target": "cut"}, "minority": "Fair",
                 "keep": 1.0},
}
CNN_STEPS = {"digits": 1500, "mnist": 2000}
METHODS = ("imbalanced", "random", "smote", "adasyn", "genlab")


def load_case(name: str, root: str) -> genlab.data.Dataset:
    case = CASES[name]
    source = case["source"]
    if source.endswith(".csv"):
        return genlab.data.load(str(Path(root) / source), **case["options"])
    return genlab.data.load(source, root=root, **case["options"]) if source == "mnist" else genlab.data.load(source, **case["options"])


def cut_and_test(data: genlab.data.Dataset, minority: str, keep: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the cut training rows and of the balanced held-out rows."""
    rng = np.random.default_rng(seed)
    names = list(data.spec.class_names)
    k = names.index(minority)
    labels = data.labels.numpy()
    train = data._splits["train"].numpy()
    held = np.concatenate([data._splits["val"].numpy(), data._splits["test"].numpy()])
    rare = train[labels[train] == k]
    kept = rng.choice(rare, size=max(2, round(keep * len(rare))), replace=False) if keep < 1 else rare
    train = np.sort(np.concatenate([train[labels[train] != k], kept]))
    per_class = min(np.bincount(labels[held], minlength=len(names)))
    test = np.sort(np.concatenate([rng.choice(held[labels[held] == c], size=per_class, replace=False) for c in range(len(names))]))
    return train, test


# -- the classifiers ------------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    def __init__(self, channels: int, side: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * (side // 2) ** 2, 64), nn.ReLU(), nn.Linear(64, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_cnn(x: np.ndarray, y: np.ndarray, classes: int, steps: int, seed: int) -> SmallCNN:
    torch.manual_seed(seed)
    model = SmallCNN(x.shape[1], x.shape[2], classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(len(xt), (64,), generator=generator)
        loss = nn.functional.cross_entropy(model(xt[index]), yt[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def cnn_predict(model: SmallCNN, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(c).float()).argmax(1) for c in np.array_split(x, max(1, len(x) // 2048))]).numpy()


def table_features(frame: pd.DataFrame, target: str):
    """A scikit-learn transformer fitted on `frame`: standardised numbers, one-hot categories."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    features = frame.drop(columns=[target])
    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c]) and not pd.api.types.is_bool_dtype(features[c])]
    other = [c for c in features.columns if c not in numeric]
    transformer = ColumnTransformer([
        ("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("categories", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore",
                                                                                            sparse_output=False)), other),
    ])
    return transformer.fit(features.astype({c: object for c in other}))


def as_features(transformer, frame: pd.DataFrame, target: str) -> np.ndarray:
    features = frame.drop(columns=[target])
    other = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c]) or pd.api.types.is_bool_dtype(features[c])]
    return np.asarray(transformer.transform(features.astype({c: object for c in other})), dtype=np.float64)


def scores(y_true: np.ndarray, y_pred: np.ndarray, minority: int) -> dict[str, float]:
    from sklearn.metrics import balanced_accuracy_score, f1_score

    return {"balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "minority_f1": float(f1_score(y_true, y_pred, labels=[minority], average=None)[0])}


# -- oversamplers -----------------------------------------------------------------------------------------------
def imblearn_available() -> bool:
    try:
        import imblearn  # noqa: F401
    except ImportError:
        return False
    return True


def oversample(method: str, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from imblearn.over_sampling import ADASYN, SMOTE, RandomOverSampler

    smallest = int(np.bincount(y)[np.bincount(y) > 0].min())
    neighbours = max(1, min(5, smallest - 1))
    sampler = {"random": lambda: RandomOverSampler(random_state=seed),
               "smote": lambda: SMOTE(k_neighbors=neighbours, random_state=seed),
               "adasyn": lambda: ADASYN(n_neighbors=neighbours, random_state=seed)}[method]()
    shape = x.shape[1:]
    xs, ys = sampler.fit_resample(x.reshape(len(x), -1), y)
    return xs.reshape(len(xs), *shape), ys


# -- one case ---------------------------------------------------------------------------------------------------
def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"balance-{name}-"))
    try:
        return measure_case(name, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_case(name: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    case = CASES[name]
    data = load_case(name, args.data_root)
    names = list(data.spec.class_names)
    minority = names.index(case["minority"])
    train_index, test_index = cut_and_test(data, case["minority"], case["keep"])
    labels = data.labels.numpy()
    counts = np.bincount(labels[train_index], minlength=len(names))
    print(f"\n{name}: {len(train_index)} training rows (class {case['minority']!r} cut to {counts[minority]}), "
          f"balanced test set {len(test_index)} rows; counts {counts.tolist()}", flush=True)
    model = args.table_model if case["kind"] == "table" else args.image_model
    train_options: dict[str, Any] = {"progress": False, "sample_every": 0, "checkpoint_every": 0}
    if args.steps:
        train_options["max_steps"] = args.steps
    if args.batch_size:
        train_options["batch_size"] = args.batch_size
    fields = dict(item.split("=", 1) for item in args.set)
    if case["kind"] == "table":
        target = data.spec.target
        frame = data.frame
        source = work / f"{name}.csv"
        frame.iloc[train_index].to_csv(source, index=False)
        start = time.perf_counter()
        result = balance(source, work / "balanced.csv", model=model, data_options={**case["options"], "target": target}, fields=fields,
                         train_options=train_options, run_out=work / "run", seed=0)
        genlab_s = time.perf_counter() - start
        balanced = pd.read_csv(work / "balanced.csv")
        transformer = table_features(frame.iloc[train_index], target)
        y_of = {v: i for i, v in enumerate(names)}

        def xy(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
            return as_features(transformer, rows, target), rows[target].astype(str).map(y_of).to_numpy()

        x_train, y_train = xy(frame.iloc[train_index])
        x_test, y_test = xy(frame.iloc[test_index])
        x_genlab, y_genlab = xy(balanced)
    else:
        x_all, _ = data.tensors()
        x_np = x_all.numpy()
        source = work / f"{name}.npz"
        stored = data.storage.numpy()
        np.savez(source, x=stored[train_index], y=np.array(names)[labels[train_index]])
        diffusion = genlab.registry.get(model).family == "diffusion"
        start = time.perf_counter()
        result = balance(source, work / "balanced.npz", model=model, fields=fields, train_options=train_options,
                         run_out=work / "run", seed=0, sampling={"steps": args.sample_steps} if args.sample_steps and diffusion else None)
        genlab_s = time.perf_counter() - start
        with np.load(work / "balanced.npz") as saved:
            xb, yb = saved["x"], saved["y"]
        x_genlab = xb.astype(np.float32) / 255.0 if xb.dtype == np.uint8 else xb.astype(np.float32)
        y_genlab = np.array([names.index(str(v)) for v in yb])
        x_train, y_train = x_np[train_index], labels[train_index]
        x_test, y_test = x_np[test_index], labels[test_index]
    print(f"  genlab balance ({model}): {result.added} samples added in {genlab_s:.0f} s (training and sampling)", flush=True)

    methods = [m for m in METHODS if m not in ("random", "smote", "adasyn") or imblearn_available()]
    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {"imbalanced": (x_train, y_train), "genlab": (x_genlab, y_genlab)}
    rows: dict[str, dict[str, Any]] = {}
    for method in methods:
        start = time.perf_counter()
        if method not in sets:
            try:
                sets[method] = oversample(method, x_train, y_train, seed=0)
            except (ValueError, RuntimeError) as err:  # ADASYN refuses data where it would add nothing
                print(f"  {method}: {err}", flush=True)
                continue
        x, y = sets[method]
        prep_s = time.perf_counter() - start if method != "genlab" else genlab_s
        for classifier, got in classify(case["kind"], name, x, y, x_test, y_test, minority, len(names), args).items():
            rows[f"{method}/{classifier}"] = {"method": method, "classifier": classifier, "rows": len(y), "prepare_s": prep_s, **got}
            print(f"  {method:<10} {classifier:<8} rows {len(y):>7}  balanced accuracy {got['balanced_accuracy']:.3f}  "
                  f"minority F1 {got['minority_f1']:.3f}", flush=True)
    return {"counts": counts.tolist(), "test_rows": len(test_index), "model": model, "genlab_s": genlab_s, "rows": rows}


def classify(kind: str, name: str, x, y, x_test, y_test, minority: int, classes: int, args) -> dict[str, dict[str, float]]:
    if kind == "table":
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression

        out = {}
        for label, make in (("logistic", lambda: LogisticRegression(max_iter=3000)),
                            ("boosting", lambda: HistGradientBoostingClassifier(random_state=0))):
            out[label] = scores(y_test, make().fit(x, y).predict(x_test), minority)
        return out
    steps = 30 if args.quick else CNN_STEPS.get(name, 1500)
    runs = [scores(y_test, cnn_predict(train_cnn(x, y, classes, steps, seed), x_test), minority) for seed in range(args.seeds)]
    return {"cnn": {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="digits,breast_cancer,diamonds,mnist")
    parser.add_argument("--data-root", default="../shared/datasets")
    parser.add_argument("--table-model", default="tabular")
    parser.add_argument("--image-model", default="ddpm")
    parser.add_argument("--sample-steps", type=int, default=None, help="diffusion sampler steps (default: the model's)")
    parser.add_argument("--seeds", type=int, default=3, help="CNN seeds averaged")
    add_run_options(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.seeds = args.steps or 5, 1
        args.sample_steps = args.sample_steps or 3
    if not imblearn_available():
        print("imbalanced-learn is not installed here: measuring the imbalanced data and genlab alone (see the docstring)",
              file=sys.stderr)
    results: dict[str, Any] = {}
    for name in [c for c in args.cases.split(",") if c]:
        if name not in CASES:
            parser.error(f"unknown case {name!r}; cases: {', '.join(CASES)}")
        results[name] = run_case(name, args)
        if args.json:
            Path(args.json).write_text(json.dumps({"settings": vars(args), "torch": torch.__version__, "results": results}, indent=2))
        print_table(name, results[name])
    return 0


def print_table(name: str, result: dict[str, Any]) -> None:
    print(f"\n| {name} | classifier | rows | balanced accuracy | minority F1 | prepare s |")
    print("|---|---|---|---|---|---|")
    for r in result["rows"].values():
        print(f"| {r['method']} | {r['classifier']} | {r['rows']} | {r['balanced_accuracy']:.3f} | {r['minority_f1']:.3f} | "
              f"{r['prepare_s']:.1f} |")
    for classifier in dict.fromkeys(r["classifier"] for r in result["rows"].values()):
        mine, smote = result["rows"].get(f"genlab/{classifier}"), result["rows"].get(f"smote/{classifier}")
        if mine and smote:
            print(f"genlab - SMOTE ({classifier}): balanced accuracy {mine['balanced_accuracy'] - smote['balanced_accuracy']:+.3f}, "
                  f"minority F1 {mine['minority_f1'] - smote['minority_f1']:+.3f}")
    if not math.isfinite(result["genlab_s"]):
        print("genlab did not run")


if __name__ == "__main__":
    raise SystemExit(main())
