"""flow-matching against ddpm: the same network, data, batches and training steps (both take the
diffusion family's training defaults), sampled with the same number of network evaluations.

    python benchmarks/flow_matching_vs_ddpm.py --data digits --runs runs/fm-bench --json results/fm-digits.json
    python benchmarks/flow_matching_vs_ddpm.py --data moons --runs runs/fm-bench
    python benchmarks/flow_matching_vs_ddpm.py --quick

Trains `flow-matching` and `ddpm` with `genlab train` defaults into RUNS/<model>-<data> (kept, and
reused when they exist), then for each sampler row draws --n samples per seed and scores them with
`genlab.metrics.report.sample_metrics` against the test split (FID etc. for images; MMD, precision,
recall and modes for vectors). Each row prints flow-matching's figure, ddpm's, and their ratio. The
likelihood rows are each model's own: flow-matching's probability-flow ODE NLL, ddpm's variational
bound (a discrete DDPM has no ODE likelihood in genlab; `genlab eval` reports the same numbers).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import genlab
from genlab.cli.main import main as genlab_cli
from genlab.metrics.report import measure_metrics, model_likelihood, sample_metrics

# (label, sampler, ddpm's steps, flow-matching's steps): rows of (nearly) equal network evaluations.
# The straight path stops at t_min > 0 and denoises once more, so its first-order rows take one step
# fewer; Heun costs it 2n against ddpm's 2n - 1 (printed).
SAMPLERS = [
    ("Euler/DDIM (20 NFE)", "ddim", 20, 19),
    ("DPM-Solver++ (20 NFE)", "dpm_solver", 20, 19),
    ("Heun-10 (19/20 NFE)", "heun", 10, 10),
    ("Euler/DDIM (50 NFE)", "ddim", 50, 49),
]


def train(model: str, data: str, out: Path, quick: bool) -> float:
    if (out / "state.pt").is_file():
        return float("nan")
    extra = ["--max-steps", "20", "--batch-size", "32", "--set", "preset=tiny"] if quick and data == "digits" else (
        ["--max-steps", "20", "--batch-size", "32"] if quick else [])  # fmt: skip
    start = time.process_time()
    code = genlab_cli(["train", model, "--data", data, "--out", str(out), "--no-progress", "--no-tensorboard", *extra])
    if code:
        raise SystemExit(f"training {model} failed (exit {code})")
    return time.process_time() - start


@torch.no_grad()
def draw(model, n: int, sampler: str, steps: int, seed: int) -> tuple[torch.Tensor, int]:
    generator = torch.Generator().manual_seed(seed)
    parts, nfe = [], 0
    for start in range(0, n, 500):
        result = model.generate(min(500, n - start), generator=generator, sampler=sampler, steps=steps)
        parts.append(model.to_data_space(result.x).float().cpu())
        nfe = result.nfe
    return torch.cat(parts), nfe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--runs", default="runs/fm-bench", help="folder of the two runs (reused when present)")
    parser.add_argument("-n", type=int, default=1000, help="samples per seed")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 training steps, 100 samples, 1 seed")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n, seeds = (100, 1) if args.quick else (args.n, args.seeds)
    runs = Path(args.runs)
    names = ("flow-matching", "ddpm")
    cpu = {m: train(m, args.data, runs / f"{m}-{args.data}", args.quick) for m in names}
    models = {m: genlab.load(runs / f"{m}-{args.data}") for m in names}
    data = genlab.data.load(args.data)
    real, _ = data.split("test").tensors()
    extractor = args.data if models["ddpm"].spec.kind == "image" else None
    key = "fid" if extractor else "mmd"
    table: dict[str, dict] = {}
    print(f"{args.data}: {n} samples x {seeds} seeds against {len(real)} test samples; training CPU seconds {cpu}")
    print(f"{'sampler':<28}{'flow-matching ' + key:>22}{'ddpm ' + key:>14}{'ratio':>8}")
    for label, sampler, ddpm_steps, fm_steps in SAMPLERS:
        row = {}
        for m in names:
            steps = fm_steps if m == "flow-matching" else ddpm_steps
            scores, nfe = [], 0
            for seed in range(seeds):
                fake, nfe = draw(models[m], n, sampler, steps, seed)
                scores.append(sample_metrics(real, fake, models[m].spec, extractor, seed))
            row[m] = {"nfe": nfe, **{k: sum(s[k] for s in scores) / seeds for k in scores[0]},
                      f"{key}_seeds": [s[key] for s in scores]}  # fmt: skip
        table[label] = row
        fm, dd = row["flow-matching"][key], row["ddpm"][key]
        print(f"{label:<28}{fm:>22.4g}{dd:>14.4g}{fm / dd:>8.3f}   (nfe {row['flow-matching']['nfe']} / {row['ddpm']['nfe']})")
    likelihood = {
        "flow-matching": measure_metrics(models["flow-matching"], real, seed=0, likelihood_n=min(256, len(real)))[0],
        "ddpm": model_likelihood(models["ddpm"], real, 0),
    }
    for m, values in likelihood.items():
        print(f"{m} likelihood: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"data": args.data, "n": n, "seeds": seeds, "train_cpu_s": cpu, "rows": table,
                                               "likelihood": likelihood, "torch": torch.__version__,
                                               "threads": torch.get_num_threads()}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
