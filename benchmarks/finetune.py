"""Fine-tuning at equal steps: a model pretrained on MNIST and fine-tuned on a few new images (all its
weights, or LoRA adapters) against the same model trained from scratch on them (issue 17).

Pretraining: each model (default vae, dcgan, ddpm) trains on MNIST with its defaults (or
--pretrain-steps) into --pretrain-dir, reused when it is there. Targets:
- fashion: 100 training images of one Fashion-MNIST class (--fashion-class, a seeded draw); FID
  against that class's 1,000 test images;
- olivetti: the 40 people of the Olivetti faces with 5 images each (their first five), resized to
  28x28 by area averaging; FID against the other 200 images (few: the FIDs are noisy and biased up).
FID, KID, precision and recall use the shipped Fashion-MNIST extractor's features for both targets
(there is no shipped face extractor: the faces' figures compare the three runs with each other, not
with published face FIDs). Each run trains --steps steps with the model's training defaults (a
fresh optimizer and schedule); 1,000 samples each.

    .venv/bin/python benchmarks/finetune.py --data-root ../shared/datasets --threads 2
    .venv/bin/python benchmarks/finetune.py --quick    # tiny budgets on the same data: a smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import genlab  # noqa: E402
from genlab.metrics.evaluate import evaluate_samples  # noqa: E402
from genlab.metrics.report import sample_in_batches  # noqa: E402
from _common import add_run_options, environment, format_table, rank_within_groups, write_json  # noqa: E402

MODELS = ("vae", "dcgan", "ddpm")
TARGETS = ("fashion", "olivetti")
MODES = ("scratch", "fine-tuned", "lora")
EXTRACTOR = "fashion_mnist"


def fashion_target(root: str, class_name: str, n: int, seed: int):
    data = genlab.data.load("fashion_mnist", root=root, seed=0)
    names = list(data.spec.class_names)
    if class_name not in names:
        raise SystemExit(f"--fashion-class {class_name!r}: choose one of {', '.join(names)}")
    c = names.index(class_name)
    train, test = data.split("train"), data.split("test")
    pool = torch.nonzero(train.labels == c).flatten()
    chosen = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]]
    return train.subset(chosen), test.subset(torch.nonzero(test.labels == c).flatten()).tensors()[0]


def olivetti_target(root: str, work: Path, per_person: int = 5):
    faces = np.load(Path(root) / "olivetti-faces" / "faces.npz", allow_pickle=False)
    x = torch.from_numpy(faces["x"]).float().unsqueeze(1) / 255.0  # (400, 1, 64, 64)
    small = (F.interpolate(x, size=(28, 28), mode="area") * 255.0).round().to(torch.uint8)
    rank = rank_within_groups(torch.from_numpy(faces["y"]).long())
    path = work / "olivetti-28.npz"
    np.savez(path, x=small.numpy(), y=faces["y"])
    data = genlab.data.load(str(path), seed=0)
    train, reference = torch.nonzero(rank < per_person).flatten(), torch.nonzero(rank >= per_person).flatten()
    return data.subset(train), data.subset(reference).tensors()[0]


def pretrained_run(name: str, root: str, pretrain_dir: Path, steps: int | None, quick: bool) -> Path:
    out = pretrain_dir / f"{name}-mnist"
    if (out / "model.safetensors").is_file() and (out / "samples.png").is_file():
        print(f"{name}: reusing the pretrained run {out}", flush=True)
        return out
    data = genlab.data.load("mnist", root=root, seed=0)
    options: dict[str, Any] = {"max_steps": 20} if quick else ({"max_steps": steps} if steps else {})
    torch.manual_seed(0)
    start = time.perf_counter()
    genlab.fit(genlab.create(name, data=data), data, out=out, progress=False, sample_every=0, tensorboard=False, **options)
    print(f"{name}: pretrained on MNIST in {time.perf_counter() - start:.0f} s -> {out}", flush=True)
    return out


def run_mode(name: str, mode: str, target, reference: torch.Tensor, pretrained: Path, steps: int, lora_rank: int,
             n_samples: int) -> dict[str, Any]:
    torch.manual_seed(0)
    options: dict[str, Any] = {"max_steps": steps}
    if mode != "scratch":
        options["init"] = str(pretrained)
    if mode == "lora":
        options["lora_rank"] = lora_rank
    model = genlab.create(name, data=target)
    start = time.perf_counter()
    run = genlab.fit(model, target, progress=False, sample_every=0, checkpoint_every=0, tensorboard=False, **options)
    fit_s = time.perf_counter() - start
    fake = sample_in_batches(run.sampling_model.eval(), n_samples, seed=0)
    metrics = evaluate_samples(reference, fake, EXTRACTOR, generator=torch.Generator().manual_seed(0))
    return {**{k: float(v) for k, v in metrics.items()}, "fit_s": fit_s, "steps": run.step}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="../shared/datasets", help="where mnist/, fashion-mnist/ and olivetti-faces/ are")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated (default {','.join(MODELS)})")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated from {', '.join(TARGETS)}")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated from {', '.join(MODES)}")
    parser.add_argument("--fashion-class", default="Sneaker", help="the Fashion-MNIST class of the 100 images")
    parser.add_argument("--pretrain-dir", default="results/finetune-pretrained", help="where the MNIST runs are kept and reused")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="MNIST steps (default: each model's own)")
    parser.add_argument("--lora-rank", type=int, default=4)
    parser.add_argument("--samples", type=int, default=1000, help="samples per run for the FID (default 1000)")
    add_run_options(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = 20 if args.quick else (args.steps or 500)
    n_samples = 64 if args.quick else args.samples
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    pretrain_dir = Path(args.pretrain_dir)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as work:
        targets = {}
        for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
            if target == "fashion":
                targets[f"Fashion-MNIST {args.fashion_class}, 100 images"] = fashion_target(args.data_root, args.fashion_class, 100, seed=0)
            elif target == "olivetti":
                targets["Olivetti faces, 40 people x 5"] = olivetti_target(args.data_root, Path(work))
            else:
                parser.error(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
        for name in models:
            pretrained = pretrained_run(name, args.data_root, pretrain_dir, args.pretrain_steps, args.quick)
            for label, (target, reference) in targets.items():
                for mode in modes:
                    row = run_mode(name, mode, target, reference, pretrained, steps, args.lora_rank, n_samples)
                    results.setdefault(label, {})[f"{name} {mode}"] = row
                    print(f"{label}: {name} {mode}: FID {row['fid']:.1f} ({row['fit_s']:.0f} s)", flush=True)
    for label, rows in results.items():
        print(f"\n{label}: {steps} steps each, FID against {EXTRACTOR} features")
        print(format_table(["run", "FID", "KID", "precision", "recall", "fit s"],
                           [[k, r["fid"], r.get("kid", float("nan")), r.get("precision", float("nan")), r.get("recall", float("nan")),
                             r["fit_s"]] for k, r in rows.items()]))
    write_json(args.json, {"settings": vars(args), "environment": environment(), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
