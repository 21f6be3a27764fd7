"""genlab's vector flows (realnvp, maf, nsf) against zuko's (RealNVP, MAF, NSF) on 2D toys: test NLL in nats.

zuko is not a genlab dependency. Install it beside genlab (it needs only torch and numpy):

    pip install zuko          # checked with zuko 1.6.0 and torch 2.13

Without it, the script says so and measures genlab alone.

What it does, for each dataset and model:

- Data: `genlab.data.load(name)` (10,000 points, split 0.8/0.1/0.1 with seed 0) for `8gaussians`,
  `moons`, `checkerboard`; and `8gaussians-sharp`, the same 8 centres with component std 0.0566
  (a sixth of 8gaussians' 0.354; built here, with its exact density), where a flow must resolve
  modes ~50 times narrower than their distance and a careless one turns NaN.
- Models: genlab's `realnvp`, `maf`, `nsf` (`genlab.create(name, data=...)`, their default configs)
  and zuko's `RealNVP`, `MAF`, `NSF` (autoregressive splines; zuko's default) with the same number
  of transforms and hidden widths chosen so the parameter counts are comparable (both printed).
  zuko's flows get the train split standardised (mean 0, std 1 per coordinate, with its log-det
  added to log p), as zuko's documentation recommends; genlab's start with data-initialised
  ActNorm (`initialize_from_data`), which does the same inside the model.
- Training: one loop for all: the same number of steps (`--steps`), batch size, AdamW at `--lr`
  with a cosine decay to 0, the same batches in the same order (a seeded permutation per epoch), no
  EMA, no gradient clipping. Wall time is printed beside (a rough number on a shared CPU).
- Evaluation: mean -log p(x) over the test split in nats; on the mixtures also the gap to the true
  entropy (8gaussians: 2.831 nats, the number usually quoted) and to the true NLL of the same test
  points (a paired comparison, free of the test set's sampling error of ~0.03 nats). A model whose
  test log-density is not finite everywhere, or whose loss went NaN, is marked.

    python benchmarks/flows_vs_zuko.py                          # all datasets and models (~30 min on 2 busy cores)
    python benchmarks/flows_vs_zuko.py --datasets 8gaussians --models maf,nsf --steps 1000
    python benchmarks/flows_vs_zuko.py --quick                  # smoke run, 50 steps; numbers mean nothing
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

import genlab  # noqa: E402
import genlab.models.flows  # noqa: E402,F401  (registers the flows, if genlab.models does not yet)
from genlab.data import Batch, DataSpec, Dataset, gaussian_mixture, seeded_splits  # noqa: E402
from _common import count_parameters, environment, format_table, write_json  # noqa: E402

ENTROPY_8GAUSSIANS = 2.831  # nats, the figure usually quoted for FFJORD's 8gaussians
SHARP_STD = 0.0566
DATASETS = ("8gaussians", "moons", "checkerboard", "8gaussians-sharp")
MODELS = ("realnvp", "maf", "nsf")


# -- data ----------------------------------------------------------------------------------------------
def sharp_8gaussians(n: int = 10_000, seed: int = 0, std: float = SHARP_STD) -> Dataset:
    """8gaussians' centres with component std `std`: x = c_k + std e, k uniform; exact log-density."""
    centers, _ = gaussian_mixture("8gaussians")
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(len(centers), (n,), generator=g)
    x = (centers[k] + std * torch.randn(n, 2, generator=g, dtype=torch.float64)).float()
    spec = DataSpec("8gaussians-sharp", kind="vector", shape=(2,), value_range=(-4.5, 4.5), num_classes=8,
                    class_names=tuple(str(i) for i in range(8)))
    return Dataset(x, spec, k, splits=seeded_splits(n, seed), true_log_prob=functools.partial(_mixture_log_prob, centers, std))


def _mixture_log_prob(centers: Tensor, std: float, x: Tensor) -> Tensor:
    sq = (x.double()[:, None, :] - centers[None]).pow(2).sum(-1)
    return (torch.logsumexp(-0.5 * sq / std**2 - math.log(2 * math.pi * std**2), 1) - math.log(len(centers))).to(x.dtype)


def load(name: str) -> Dataset:
    return sharp_8gaussians() if name == "8gaussians-sharp" else genlab.data.load(name)


def true_entropy(data: Dataset, n: int = 1_000_000) -> float | None:
    """-E_p[log p] by Monte Carlo on fresh draws (standard error < 0.001 nats), None without a density."""
    if data.true_log_prob is None or data.spec.name not in ("8gaussians", "8gaussians-sharp"):
        return None
    if data.spec.name == "8gaussians":
        return ENTROPY_8GAUSSIANS
    return float(-data.true_log_prob(sharp_8gaussians(n, seed=1).tensors()[0].double()).mean())


# -- the two libraries behind one interface -------------------------------------------------------------
class GenlabFlow:
    library = "genlab"

    def __init__(self, name: str, data: Dataset, seed: int) -> None:
        torch.manual_seed(seed)
        self.model = genlab.create(name, data=data)
        self.model.initialize_from_data(data.train, torch.Generator().manual_seed(seed))

    def parameters(self):
        return self.model.parameters()

    def loss(self, x: Tensor) -> Tensor:
        return self.model.loss(Batch(x)).total

    def log_prob(self, x: Tensor) -> Tensor:
        return self.model.log_prob(x)

    def train(self, mode: bool) -> None:
        self.model.train(mode)


class ZukoFlow:
    library = "zuko"

    def __init__(self, name: str, data: Dataset, seed: int, like: GenlabFlow) -> None:
        import zuko

        torch.manual_seed(seed)
        x = data.train.tensors()[0]
        self.mean, self.std = x.mean(0), x.std(0)
        cfg = like.model.config
        if name == "realnvp":
            # genlab's realnvp: `couplings` affine couplings with MLP conditioners of `hidden` widths
            self.flow = zuko.flows.RealNVP(2, transforms=cfg.couplings, hidden_features=tuple(cfg.hidden))
        elif name == "maf":
            self.flow = zuko.flows.MAF(2, transforms=cfg.transforms, hidden_features=tuple(cfg.hidden))
        else:
            self.flow = zuko.flows.NSF(2, bins=cfg.bins, transforms=cfg.transforms, hidden_features=tuple(cfg.hidden))

    def parameters(self):
        return self.flow.parameters()

    def log_prob(self, x: Tensor) -> Tensor:
        # log p(x) = log q((x - m) / s) - sum log s
        return self.flow().log_prob((x - self.mean) / self.std) - self.std.log().sum()

    def loss(self, x: Tensor) -> Tensor:
        return -self.log_prob(x).mean()

    def train(self, mode: bool) -> None:
        self.flow.train(mode)


def zuko_status() -> tuple[bool, str]:
    try:
        import zuko
    except ImportError as exc:
        return False, f"zuko is not installed ({exc}); `pip install zuko` to compare (measuring genlab alone)"
    return True, f"zuko {getattr(zuko, '__version__', '?')}"


# -- training and evaluation -----------------------------------------------------------------------------
def train(flow, data: Dataset, *, steps: int, batch_size: int, lr: float, seed: int) -> dict[str, Any]:
    """AdamW at lr with a cosine decay to 0 over `steps`; batches from a seeded permutation per epoch."""
    x_train = data.train.tensors()[0]
    optimizer = torch.optim.AdamW(flow.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    g = torch.Generator().manual_seed(seed)
    order, cursor, nan_steps = torch.randperm(len(x_train), generator=g), 0, 0
    flow.train(True)
    start = time.perf_counter()
    for _ in range(steps):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(x_train), generator=g), 0
        batch = x_train[order[cursor : cursor + batch_size]]
        cursor += batch_size
        loss = flow.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            nan_steps += 1  # skipped: the update would poison the weights
            continue
        loss.backward()
        optimizer.step()
        schedule.step()
    flow.train(False)
    return {"seconds": time.perf_counter() - start, "nonfinite_steps": nan_steps}


@torch.no_grad()
def evaluate(flow, data: Dataset) -> dict[str, Any]:
    x = data.test.tensors()[0]
    log_p = torch.cat([flow.log_prob(chunk) for chunk in x.split(1000)])
    finite = torch.isfinite(log_p)
    out = {"test_nll": float(-log_p[finite].mean()) if finite.any() else math.nan, "nonfinite_test_points": int((~finite).sum())}
    if data.true_log_prob is not None:
        true = data.true_log_prob(x.double()).float()
        both = finite & torch.isfinite(true)
        out["paired_gap"] = float((true[both] - log_p[both]).mean()) if both.any() else math.nan
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-zuko", action="store_true", help="measure genlab alone")
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 steps")
    parser.add_argument("--json", default=None, help="also write settings, environment and every number here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = 50 if args.quick else args.steps
    have_zuko, status = (False, "zuko skipped (--no-zuko)") if args.no_zuko else zuko_status()
    print(status)
    print(f"steps {steps}, batch {args.batch_size}, AdamW lr {args.lr} cosine, seed {args.seed}, threads {args.threads}\n")

    rows, results = [], []
    for dataset_name in args.datasets.split(","):
        data = load(dataset_name)
        entropy = true_entropy(data)
        for model_name in args.models.split(","):
            ours = GenlabFlow(model_name, data, args.seed)
            flows = [ours] + ([ZukoFlow(model_name, data, args.seed, ours)] if have_zuko else [])
            for flow in flows:
                record = {"dataset": dataset_name, "model": model_name, "library": flow.library,
                          "parameters": count_parameters(flow.flow if flow.library == "zuko" else flow.model)}
                record.update(train(flow, data, steps=steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed))
                record.update(evaluate(flow, data))
                if entropy is not None:
                    record["gap_to_entropy"] = record["test_nll"] - entropy
                results.append(record)
                rows.append([
                    dataset_name, model_name, flow.library, record["parameters"], f"{record['test_nll']:.4f}",
                    "" if entropy is None else f"{record['gap_to_entropy']:+.4f}",
                    "" if "paired_gap" not in record else f"{record['paired_gap']:+.4f}",
                    record["nonfinite_steps"] + record["nonfinite_test_points"], f"{record['seconds']:.0f}",
                ])
                print(format_table(["data", "model", "library", "params", "test NLL", "- entropy", "- true NLL", "NaN", "s"], rows[-1:]).splitlines()[-1], flush=True)
        if entropy is not None:
            print(f"  {dataset_name}: true entropy {entropy:.4f} nats; true NLL of its test points "
                  f"{float(-data.true_log_prob(data.test.tensors()[0].double()).mean()):.4f}")

    print()
    print(format_table(["data", "model", "library", "params", "test NLL", "- entropy", "- true NLL", "NaN", "s"], rows))
    print("\n'- entropy': test NLL minus the true entropy; '- true NLL': minus the true NLL of the same test points;\n"
          "'NaN': training steps with a non-finite loss plus test points with a non-finite log-density.")
    write_json(args.json, {"settings": vars(args), "environment": environment(), "zuko": status, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
