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
    target: str | None = None,
) -> dict[str, Any]:
    """Sample metrics and likelihood of a run's model on the held-out `split` of its data, and of
    each baseline (e.g. "gmm") fitted to the same training split. Writes RUN/eval.json.

    The model draws as many samples as the split holds, at least MIN_GENERATED (or n), from a
    generator seeded with `seed`. Besides `log_prob` / `nll_bound`, the model's
    `likelihood_measures` are reported (a diffusion model's ODE likelihood, a VQ-VAE's code length);
    the costly ones (and a costly `nll_bound`, a DDPM's variational bound) on `likelihood_n` held-out samples (None: LIKELIHOOD_N); report["likelihoods"]
    says how and on how many samples each was computed.

    A table run is also measured as a table (`genlab.metrics.tabular.table_metrics`) on the decoded
    rows: report["table"] holds quality, detection, efficacy for `target` (default: the column the
    data was loaded with as target, else a column named "target", else none) and privacy, and
    RUN/eval_columns.png and RUN/eval_pairs.png picture it.
    """
    import genlab.data
    from genlab.train.checkpoint import save_json
    from genlab.train.run import load_model, read_run_config, run_data_source

    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"n={n!r} must be a positive number of samples to draw (default: the held-out split's size, at least {MIN_GENERATED})")
    likelihood_n = LIKELIHOOD_N if likelihood_n is None else likelihood_n
    check_likelihood_n(likelihood_n)  # before the costly part, not after it
    cfg = read_run_config(run_dir)
    model = load_model(run_dir, ema=ema, device=device)
    data = genlab.data.load(**{**run_data_source(cfg), **(data_options or {})})
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
    if model.spec.kind == "table":
        report["table"], report["table_target"] = _table_report(run_dir, data, held_out, fake, target, cfg, seed)
    for name in baselines:
        if name not in BASELINES:
            raise ConfigError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
        baseline = BASELINES[name](seed=seed).fit(data.split("train"))
        # sample metrics only: the baseline's density was fitted to undequantized values, so its
        # likelihood is not comparable with a model's
        report[name] = sample_metrics(real, baseline.sample(n, seed=seed), model.spec, extractor, seed)
    save_json(report, Path(run_dir) / "eval.json")
    return report


def _table_report(run_dir, data, held_out, fake, target, cfg, seed) -> tuple[dict[str, float], str | None]:
    """The synthetic rows decoded and measured against the real ones (flat numbers, see
    `table_metrics`), the efficacy target used, and the two report pictures in the run folder."""
    from genlab.data.tables import column_kinds
    from genlab.metrics.tabular import table_metrics
    from genlab.train.run import read_table_encoder
    from genlab.viz.tables import column_histograms, pair_trend_heatmap

    train, test = data.split("train").frame, held_out.frame
    synthetic = read_table_encoder(run_dir).decode(fake)
    kinds = column_kinds(train)
    if target is None:
        target = cfg["data"].get("target") or ("target" if "target" in kinds else None)
    if target is not None and target not in kinds:
        raise ConfigError(f"--target {target!r} is not a column of the table; columns are {', '.join(kinds)}")
    numbers, quality = table_metrics(synthetic, train, test, kinds, target=target, seed=seed)
    efficacy = numbers.pop("efficacy", {})
    numbers.update({k: v for k, v in efficacy.items() if isinstance(v, float)})
    column_histograms(train, synthetic, kinds, Path(run_dir) / "eval_columns.png")
    pair_trend_heatmap(quality.pairs, list(kinds), Path(run_dir) / "eval_pairs.png")
    return numbers, target
