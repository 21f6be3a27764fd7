"""Synthetic tables side by side: genlab's `tabular` (and optionally other genlab models) against
SDV's GaussianCopula, CTGAN and TVAE at their defaults (named sdv-gaussian-copula, sdv-ctgan and
sdv-tvae: genlab's own `ctgan` and `vae` compare with the same words), on the same splits, with the
same metrics.

SDV is not a genlab dependency. Install it in its own virtualenv with genlab beside it:

    python3 -m venv ../sdv-venv && ../sdv-venv/bin/pip install -r requirements-cpu.txt -e . "sdv==2.0.0"
    ../sdv-venv/bin/python benchmarks/tables.py --data-root ../shared/datasets

(checked with sdv 2.0.0, torch 2.x CPU). Without SDV the script says so and measures genlab alone.

For each table: genlab's seeded split (train 80% / val 10% / test 10%; `genlab.data.load(...,
seed=0)`); every synthesizer is fitted on the training rows and samples as many rows; the held-out
rows are the val and test splits together (20%; genlab uses val only to log a validation loss).
The held-out rows are also scored in place of synthetic ones ("real held-out": quality and
detection against the training rows), the reference a synthesizer can reach. The
measures are `genlab.metrics.tabular.table_metrics` (SDMetrics' quality definitions, detection
AUC, TSTR against TRTR for the table's target, DCR privacy), and fit and sample seconds.

    python benchmarks/tables.py --tables wine,penguins --synthesizers tabular,ctgan,vae,sdv-gaussian-copula,sdv-ctgan
    python benchmarks/tables.py --tables wine --synthesizers tabular --steps 1000 --set dropout=0.3
    python benchmarks/tables.py --quick          # smoke run: 200 steps / 2 epochs; numbers mean nothing
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import genlab  # noqa: E402
from genlab.data.tables import column_kinds  # noqa: E402
from genlab.metrics.tabular import table_metrics  # noqa: E402
from _common import add_run_options  # noqa: E402

# name -> (genlab.data.load source, its options, the target column)
TABLES: dict[str, tuple[str, dict[str, Any], str]] = {
    "wine": ("wine", {}, "target"),
    "breast_cancer": ("breast_cancer", {}, "target"),
    "diabetes": ("diabetes", {}, "target"),
    "penguins": ("tables/penguins.csv", {"target": "species"}, "species"),
    "mpg": ("tables/mpg.csv", {"target": "class"}, "class"),
    "diamonds": ("tables/diamonds.csv", {"target": "cut", "kinds": "cut=ordinal,color=ordinal,clarity=ordinal"}, "cut"),
}
SDV = ("sdv-gaussian-copula", "sdv-ctgan", "sdv-tvae")
COLUMNS = ["quality", "column_shapes", "pair_trends", "detection_auc", "tstr", "trtr", "dcr_ratio", "closer_to_train",
           "exact_copies", "fit_s", "sample_s"]


def load_table(name: str, root: str) -> genlab.data.Dataset:
    source, options, _ = TABLES[name]
    if source.endswith(".csv"):
        source = os.path.join(root, source)
    return genlab.data.load(source, **options)


def fit_genlab(model_name: str, data, steps: int | None, fields: dict[str, str], batch_size: int | None = None) -> tuple[Callable[[int], pd.DataFrame], float]:
    torch.manual_seed(0)
    model = genlab.create(model_name, data=data, **fields)
    start = time.perf_counter()
    options = ({"max_steps": steps} if steps else {}) | ({"batch_size": batch_size} if batch_size else {})
    run = genlab.fit(model, data, progress=False, sample_every=0, checkpoint_every=0, **options)
    seconds = time.perf_counter() - start
    sampler = run.sampling_model.eval()

    def sample(n: int) -> pd.DataFrame:
        generator = torch.Generator().manual_seed(0)
        rows = [sampler.sample(min(5000, n - i), generator=generator) for i in range(0, n, 5000)]
        return data.decode_rows(torch.cat(rows))

    return sample, seconds


def fit_sdv(kind: str, train: pd.DataFrame, epochs: int | None) -> tuple[Callable[[int], pd.DataFrame], float]:
    from sdv.metadata import Metadata
    from sdv.single_table import CTGANSynthesizer, GaussianCopulaSynthesizer, TVAESynthesizer

    # CTGAN and TVAE refuse pandas' category dtype: its values as plain objects
    train = train.astype({c: object for c in train.columns if isinstance(train[c].dtype, pd.CategoricalDtype)})
    metadata = Metadata.detect_from_dataframes({"table": train}, infer_keys=None)
    cls = {"sdv-gaussian-copula": GaussianCopulaSynthesizer, "sdv-ctgan": CTGANSynthesizer, "sdv-tvae": TVAESynthesizer}[kind]
    synthesizer = cls(metadata, **({"epochs": epochs} if epochs and kind != "sdv-gaussian-copula" else {}))
    start = time.perf_counter()
    synthesizer.fit({"table": train})  # SDV 2 takes and gives {table name: frame}
    seconds = time.perf_counter() - start

    def sample(n: int) -> pd.DataFrame:
        rows = synthesizer.sample(num_rows=n)
        return rows["table"] if isinstance(rows, dict) else rows

    return sample, seconds


def sdv_available() -> bool:
    try:
        import sdv  # noqa: F401
    except ImportError:
        return False
    return True


def measure(synthetic: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame, target: str, kinds: dict[str, str]) -> dict[str, float]:
    synthetic = synthetic[list(train.columns)]
    numbers, _ = table_metrics(synthetic, train, test, kinds, target=target)
    efficacy = numbers.pop("efficacy")
    key = "r2" if efficacy["task"] == "regression" else "accuracy"
    numbers["tstr"], numbers["trtr"] = efficacy[f"tstr_{key}"], efficacy[f"trtr_{key}"]
    numbers["efficacy_metric"] = key
    return numbers


def reference(numbers: dict[str, float]) -> dict[str, float]:
    """The held-out rows' own scores (the "holdout_" entries), NaN for what needs synthetic rows."""
    out = {c: math.nan for c in COLUMNS} | {"efficacy_metric": numbers["efficacy_metric"], "trtr": numbers["trtr"]}
    out.update({k[len("holdout_"):]: v for k, v in numbers.items() if k.startswith("holdout_") and k[len("holdout_"):] in COLUMNS})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--synthesizers", default="tabular," + ",".join(SDV),
                        help="genlab model names (tabular, ctgan, vae, ...) and/or " + ", ".join(SDV))
    parser.add_argument("--data-root", default="../shared/datasets")
    parser.add_argument("--epochs", type=int, default=None, help="CTGAN/TVAE epochs (default: SDV's, 300)")
    add_run_options(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.epochs = 200, 2
    names = [s for s in args.synthesizers.split(",") if s]
    fields = dict(item.split("=", 1) for item in args.set)
    if any(s in SDV for s in names) and not sdv_available():
        print("sdv is not installed here: measuring genlab alone (see the docstring to install it)", file=sys.stderr)
        names = [s for s in names if s not in SDV]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for table in [t for t in args.tables.split(",") if t]:
        data = load_table(table, args.data_root)
        train = data.split("train").frame
        test = pd.concat([data.split("val").frame, data.split("test").frame], ignore_index=True)
        kinds, target = column_kinds(train), TABLES[table][2]
        results[table] = {}
        print(f"\n{table}: {len(train)} training rows, {len(test)} held-out rows, {len(kinds)} columns, target {target!r}", flush=True)
        for name in names:
            fit = (lambda: fit_sdv(name, train, args.epochs)) if name in SDV else (lambda: fit_genlab(name, data, args.steps, fields, args.batch_size))
            try:
                sample, fit_s = fit()
                start = time.perf_counter()
                synthetic = sample(len(train))
                sample_s = time.perf_counter() - start
                numbers = measure(synthetic, train, test, target, kinds)
            except Exception as err:  # one synthesizer that fails (or refuses the table) does not end the run
                print(f"  {name}: failed: {type(err).__name__}: {err}", flush=True)
                continue
            results[table].setdefault("real held-out", reference(numbers))
            results[table][name] = {**numbers, "fit_s": fit_s, "sample_s": sample_s}
            print(f"  {name}: fit {fit_s:.0f} s, sample {sample_s:.0f} s, " + ", ".join(
                f"{c} {numbers[c]:.3f}" for c in COLUMNS if c in numbers and c not in ("fit_s", "sample_s")), flush=True)
            if args.json:  # after every synthesizer, so an interrupted run keeps what it measured
                Path(args.json).write_text(json.dumps({"settings": vars(args), "torch": torch.__version__, "results": results}, indent=2))
        if results[table]:
            results[table] = {"real held-out": results[table].pop("real held-out"), **results[table]}
            print_table(table, results[table])
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "torch": torch.__version__, "results": results}, indent=2))
    return 0


def print_table(table: str, rows: dict[str, dict[str, float]]) -> None:
    metric = next(iter(rows.values()))["efficacy_metric"]
    print(f"\n| {table} | " + " | ".join(c if c not in ("tstr", "trtr") else f"{c} {metric}" for c in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, r in rows.items():
        cells = ["-" if not math.isfinite(r[c]) else f"{r[c]:.3f}" if c not in ("fit_s", "sample_s") else f"{r[c]:.1f}" for c in COLUMNS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    sdv = [n for n in rows if n in SDV]
    if "tabular" in rows and sdv:
        best = {c: max(rows[n][c] for n in sdv) for c in ("quality", "tstr")}
        best["detection_auc"] = min(rows[n]["detection_auc"] for n in sdv)
        print(f"tabular vs best SDV: quality {rows['tabular']['quality'] - best['quality']:+.3f}, detection AUC "
              f"{rows['tabular']['detection_auc'] - best['detection_auc']:+.3f} (lower is better), "
              f"TSTR {rows['tabular']['tstr'] - best['tstr']:+.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
