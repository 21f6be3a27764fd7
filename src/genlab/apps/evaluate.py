"""Evaluate a trained run as `genlab eval` does: load it, score its samples and likelihoods against
the held-out split of its data (`genlab.metrics.report`), and write RUN/eval.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from genlab.errors import ConfigError, RunError
from genlab.metrics.baselines import BASELINES
from genlab.metrics.report import (
    LIKELIHOOD_N,
    MIN_GENERATED,
    check_likelihood_n,
    model_likelihood,
    default_extractor,
    measure_metrics,
    sample_in_batches,
    sample_metrics,
)

__all__ = ["evaluate_run"]


def evaluate_run(
    run_dir: str | Path,
    *,
    extractor: str | None = None,
    n: int | None = None,
    split: str = "test",
    baselines: Sequence[str] = (),
    seed: int = 0,
    ema: bool = True,
    device: str | None = None,
    data_options: dict[str, Any] | None = None,
    likelihood_n: int | None = None,
) -> dict[str, Any]:
    """Sample metrics and likelihood of a run's model on the held-out `split` of its data, and of
    each baseline (e.g. "gmm") fitted to the same training split. Writes RUN/eval.json.

    The model draws as many samples as the split holds, at least MIN_GENERATED (or n), from a
    generator seeded with `seed`. Besides `log_prob` / `nll_bound`, the model's
    `likelihood_measures` are reported (a diffusion model's ODE likelihood, a VQ-VAE's code length);
    the costly ones (and a costly `nll_bound`, a DDPM's variational bound) on `likelihood_n` held-out samples (None: LIKELIHOOD_N); report["likelihoods"]
    says how and on how many samples each was computed.
    """
    import genlab.data
    from genlab.train.checkpoint import save_json
    from genlab.train.run import load_model, read_run_config

    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"n={n!r} must be a positive number of samples to draw (default: the held-out split's size, at least {MIN_GENERATED})")
    likelihood_n = LIKELIHOOD_N if likelihood_n is None else likelihood_n
    check_likelihood_n(likelihood_n)  # before the costly part, not after it
    cfg = read_run_config(run_dir)
    model = load_model(run_dir, ema=ema, device=device)
    data = genlab.data.load(**{**cfg["data"], **(data_options or {})})
    held_out = data.split(split)
    real, _ = held_out.tensors()
    n = n or max(len(real), MIN_GENERATED)
    extractor = extractor or default_extractor(model.spec)

    report: dict[str, Any] = {"run": str(run_dir), "split": split, "n_real": len(real), "n_fake": n,
                              "extractor": extractor, "seed": seed}
    fake = sample_in_batches(model, n, seed=seed)
    if not torch.isfinite(fake).all():
        raise RunError(f"the model's samples are not finite (NaN or infinite values); the run in '{run_dir}' has diverged: "
                       "resume it from an earlier checkpoint with a smaller --lr, or retrain")
    bound, bound_notes = model_likelihood(model, real, seed, likelihood_n=likelihood_n)
    measured, notes = measure_metrics(model, real, seed=seed, likelihood_n=likelihood_n, split=split)
    report["model"] = {**sample_metrics(real, fake, model.spec, extractor, seed), **bound, **measured}
    report["likelihoods"] = bound_notes + notes
    for name in baselines:
        if name not in BASELINES:
            raise ConfigError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
        baseline = BASELINES[name](seed=seed).fit(data.split("train"))
        # sample metrics only: the baseline's density was fitted to undequantized values, so its
        # likelihood is not comparable with a model's
        report[name] = sample_metrics(real, baseline.sample(n, seed=seed), model.spec, extractor, seed)
    save_json(report, Path(run_dir) / "eval.json")
    return report
