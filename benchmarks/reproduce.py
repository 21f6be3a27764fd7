"""The reproduction tables: every listed model trained with its defaults on a real dataset, then evaluated.

For each model of `--models` it runs, as a user would, in a subprocess of this Python:

    genlab --threads T train MODEL --data DATA --data-root ROOT --out OUT/MODEL-NAME --seed S
    genlab --threads T eval OUT/MODEL-NAME --data-root ROOT -n N --seed S

and records the wall time and the CPU time (`getrusage(RUSAGE_CHILDREN)`) of each command, then
reads the run's `eval.json`: FID, KID, precision, recall and the Inception Score in the shipped
extractor's feature space (or `--extractor`), and the likelihood the family has (bits/dim of
dequantized pixels, an IWAE or variational bound, a code length, or a cross-entropy bound in nats).
Nothing is tuned here: whatever defaults genlab has are what is measured, and the JSON keeps each
run's config.

A finished run keeps its timings in OUT/MODEL-NAME/reproduce.json and is not trained again (pass
`--retrain`, which deletes it first), so a long table can be built over several sessions, model by
model; evaluation is repeated unless `--reuse-eval`. `--n-for pixelcnn=1000` draws fewer samples
for a model whose sampling is slow (PixelCNN's 784 sequential network passes per MNIST image); the
table says how many each row used. Published figures (`PUBLISHED`) stand beside the rows they belong to, with
their source; most of the families' papers give none for these datasets.

    python benchmarks/reproduce.py --data mnist --json results/reproduce-mnist.json
    python benchmarks/reproduce.py --data fashion_mnist --models vae,dcgan,ddpm
    python benchmarks/reproduce.py --data ../shared/datasets/olivetti-faces/faces.npz --name faces \\
        --models vae,ddpm --extractor runs/faces-features.safetensors --split train -n 1000
    python benchmarks/reproduce.py --data digits --models vae --quick      # smoke run; numbers mean nothing
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, format_table, write_json  # noqa: E402

from genlab.train.run import read_run_config  # noqa: E402

MODELS = ("vae", "vq-vae", "dcgan", "wgan-gp", "realnvp", "glow", "pixelcnn", "ddpm", "edm")

# (dataset, model) -> (value, unit, source). Bits/dim of uniformly dequantized 8-bit MNIST, as tabled
# in the FFJORD paper (Grathwohl et al. 2019, Table 2), from the RealNVP and Glow models it trained.
PUBLISHED: dict[tuple[str, str], tuple[float, str, str]] = {
    ("mnist", "realnvp"): (1.06, "bits/dim", "Grathwohl et al. 2019, Table 2"),
    ("mnist", "glow"): (1.05, "bits/dim", "Grathwohl et al. 2019, Table 2"),
    ("mnist", "ffjord"): (0.99, "bits/dim", "Grathwohl et al. 2019, Table 2"),
}

# eval.json keys of the likelihood column, in order of preference, and how the table names them
LIKELIHOOD_KEYS = (
    ("nll_bits_per_dim", "bits/dim"),
    ("nll_bound_bits_per_dim", "bits/dim (bound)"),
    ("nll_ode_bits_per_dim", "bits/dim (ODE)"),
    ("code_length_bits_per_image", "prior bits/image"),
    ("cross_entropy_bound_nats", "nats (cross-entropy bound)"),
)


def run_timed(command: list[str], log: Path) -> dict[str, float]:
    """Run command with its output appended to log; wall seconds and the children's CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with log.open("a") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(f"exit {code}: {' '.join(command)}: {tail[0] if tail else ''} (log: {log})")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def likelihood(metrics: dict[str, float]) -> tuple[float | None, str]:
    for key, unit in LIKELIHOOD_KEYS:
        if key in metrics:
            return metrics[key], unit
    for key, value in metrics.items():  # a measure this table does not name yet
        if key.endswith(("_bits_per_dim", "_nats")):
            return value, key
    return None, ""


def reproduce_one(model: str, args: argparse.Namespace, genlab: list[str], out: Path) -> dict[str, Any]:
    run = out / f"{model}-{args.name}"
    log = out / f"{model}-{args.name}.log"
    record_path = run / "reproduce.json"
    data_flags = ["--data-root", args.root, *sum((["--data-option", option] for option in args.data_option), [])]
    if record_path.is_file() and not args.retrain:
        train = json.loads(record_path.read_text())["train"]
    else:
        if run.exists():  # --retrain, or a run that did not finish: genlab train refuses a used --out
            shutil.rmtree(run)
        command = [*genlab, "train", model, "--data", args.data, *data_flags, "--out", str(run), "--seed", str(args.seed)]
        if args.quick:
            command += ["--max-steps", "3", "--sample-every", "0", "--checkpoint-every", "3"]
        command += args.train_arg
        train = {**run_timed(command, log), "command": " ".join(command)}
        record_path.write_text(json.dumps({"train": train}, indent=2))
    row: dict[str, Any] = {"model": model, "run": str(run), "train": train, "config": read_run_config(run)}
    n = args.n_for.get(model, args.n)
    eval_path = run / "eval.json"
    if not (args.reuse_eval and eval_path.is_file()):
        command = [*genlab, "eval", str(run), *data_flags, "--seed", str(args.seed)]
        command += ["-n", str(n)] if n else []
        command += ["--extractor", args.extractor] if args.extractor else []
        command += ["--likelihood-n", str(args.likelihood_n), "--split", args.split]
        row["eval"] = {**run_timed(command, log), "command": " ".join(command)}
    report = json.loads(eval_path.read_text())
    row["n_real"], row["n_fake"], row["metrics"] = report["n_real"], report["n_fake"], report["model"]
    row["split"] = report.get("split", "test")
    row["likelihoods"] = report.get("likelihoods", [])
    return row


def real_reference(args: argparse.Namespace) -> dict[str, Any]:
    """The real-vs-real row, in the same process as a user's `genlab eval` would compute it: real
    images the eval split does not hold (the train split, or, when the eval compares with the train
    split, every other split) stand in for the samples, up to -n of them (the first ones), against
    the eval split in the same features. What a perfect model would score at this sample size."""
    import torch

    import genlab.data
    from genlab.metrics.report import default_extractor, sample_metrics

    options = dict(option.split("=", 1) for option in args.data_option)
    data = genlab.data.load(args.data, root=args.root, seed=args.seed, **options)
    real = data.split(args.split).tensors()[0]
    others = [name for name in data.split_names if name != args.split] if args.split == "train" else ["train"]
    stand_in = torch.cat([data.split(name).tensors()[0] for name in others])[: args.n]
    extractor = args.extractor or default_extractor(data.spec)
    start = time.perf_counter()
    metrics = sample_metrics(real, stand_in, data.spec, extractor, args.seed)
    return {"model": "real " + "+".join(others), "train": {"wall_s": 0.0, "cpu_s": 0.0}, "config": {}, "metrics": metrics,
            "n_real": len(real), "n_fake": len(stand_in), "split": args.split, "eval": {"wall_s": time.perf_counter() - start}}


def table(rows: list[dict[str, Any]], dataset: str) -> str:
    headers = ["model", "steps", "train min", "train CPU-min", "eval min", "FID", "KID", "precision", "recall", "IS",
               "likelihood", "published", "samples"]  # fmt: skip
    lines = []
    for row in rows:
        if "error" in row:
            lines.append([row["model"], "error: " + row["error"]] + [""] * (len(headers) - 2))
            continue
        metrics = row["metrics"]
        value, unit = likelihood(metrics)
        published = PUBLISHED.get((dataset, row["model"]))
        steps = row["config"].get("train", {}).get("max_steps")
        lines.append([
            row["model"], steps, row["train"]["wall_s"] / 60, row["train"]["cpu_s"] / 60,
            row["eval"]["wall_s"] / 60 if "eval" in row else None,
            metrics.get("fid"), metrics.get("kid"),
            metrics.get("precision"), metrics.get("recall"), metrics.get("inception_score"),
            "" if value is None else f"{value:.3f} {unit}",
            "" if published is None else f"{published[0]} {published[1]} ({published[2]})",
            f"{row['n_fake']:,} vs {row['n_real']:,} {row.get('split', 'test')}",
        ])  # fmt: skip
    return format_table(headers, lines)


def parse_n_for(values: list[str]) -> dict[str, int]:
    out = {}
    for value in values:
        model, _, n = value.partition("=")
        if not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--n-for {value!r}: expected MODEL=N with N a positive number of samples, e.g. pixelcnn=1000")
        out[model] = int(n)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist", help="dataset name or path, as `genlab train --data` takes it")
    parser.add_argument("--name", default=None, help="short name of the data in run names and the published table (default: --data)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated models (default: {','.join(MODELS)})")
    parser.add_argument("--root", default="../shared/datasets", help="--data-root for train and eval")
    parser.add_argument("--data-option", action="append", default=[], help="loader option KEY=VALUE for train and eval (repeatable)")
    parser.add_argument("--out", default="runs/reproduce", help="folder of the runs and their logs")
    parser.add_argument("--threads", type=int, default=2, help="genlab --threads for every command (default: 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-n", "--n", type=int, default=10000, help="samples each model draws for eval (default 10,000)")
    parser.add_argument("--n-for", action="append", default=[], help="MODEL=N: another sample count for MODEL (repeatable)")
    parser.add_argument("--likelihood-n", type=int, default=256, help="held-out images for the costly likelihoods (ODE)")
    parser.add_argument("--real-reference", action="store_true",
                        help="first a row of real images the eval split does not hold, in place of samples (what a perfect model scores)")
    parser.add_argument("--split", default="test", choices=("test", "val", "train"),
                        help="the real images eval compares with (default test; train for a set as small as the 40 test faces)")
    parser.add_argument("--extractor", default=None, help="feature extractor for eval (default: the dataset's shipped one)")
    parser.add_argument("--train-arg", action="append", default=[], help="extra `genlab train` argument (repeatable; use --train-arg=--flag)")
    parser.add_argument("--retrain", action="store_true", help="train again even where a finished run exists")
    parser.add_argument("--reuse-eval", action="store_true", help="read an existing eval.json instead of evaluating again")
    parser.add_argument("--json", default=None, help="write the settings, environment and every row here")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 training steps, 50 samples; numbers mean nothing")
    args = parser.parse_args(argv)
    args.name = args.name or Path(args.data).stem
    args.n_for = parse_n_for(args.n_for)
    if args.quick:
        args.n, args.n_for, args.likelihood_n = 50, {}, 8
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    genlab = [sys.executable, "-m", "genlab", "--threads", str(args.threads)]
    env_note = f"{os.cpu_count()} CPUs visible, genlab --threads {args.threads}"
    print(f"{args.name}: {env_note}; runs and logs in {out}", flush=True)

    rows = []
    if args.real_reference:
        rows.append(real_reference(args))
        print(table(rows[-1:], args.name), flush=True)
    for model in [m for m in args.models.split(",") if m]:
        print(f"{model} ...", flush=True)
        try:
            rows.append(reproduce_one(model, args, genlab, out))
        except (RuntimeError, OSError, KeyError, ValueError) as exc:
            print(f"  {model}: {exc}", flush=True)
            rows.append({"model": model, "error": str(exc)})
        print(table(rows[-1:], args.name), flush=True)
    text = table(rows, args.name)
    print("\n" + text)
    payload = {"settings": vars(args), "environment": environment(), "rows": rows, "table": text}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
