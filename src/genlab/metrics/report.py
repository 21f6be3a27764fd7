"""Scores of a model's samples and likelihoods against held-out data, in the units each measure
declares, and the table `genlab eval` prints; `genlab.apps.evaluate` reads the run and calls them."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from genlab.data.dataset import DataSpec
from genlab.errors import ConfigError, RunError
from genlab.metrics.evaluate import evaluate_samples
from genlab.metrics.features import shipped_extractors
from genlab.metrics.kernels import mmd
from genlab.nn.likelihood import bits_per_dim
from genlab.metrics.manifold import precision_recall
from genlab.metrics.modes import is_gaussian_mixture, toy_mode_metrics


def sample_in_batches(model, n: int, *, seed: int, batch_size: int = 500) -> Tensor:
    """n samples from model, drawn batch by batch from one seeded generator, on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    parts = [model.sample(min(batch_size, n - i), generator=generator).float().cpu() for i in range(0, n, batch_size)]
    return torch.cat(parts)


def sample_metrics(real: Tensor, fake: Tensor, spec: DataSpec, extractor: str | None, seed: int) -> dict[str, float]:
    """Images: FID/KID/precision/recall in the extractor's feature space. Vectors and tables: MMD and
    precision/recall on the standardised values themselves; on the Gaussian-mixture toys also
    "modes" (covered) and "high_quality" (share), see `genlab.metrics.modes`."""
    generator = torch.Generator().manual_seed(seed)
    if spec.kind == "image":
        return evaluate_samples(real, fake, extractor, generator=generator)
    real, fake = real.reshape(len(real), -1), fake.reshape(len(fake), -1)
    # Gaussian-mixture toys: modes covered and high-quality share (VEEGAN's protocol), in data units
    modes = toy_mode_metrics(fake, spec.name) if spec.kind == "vector" and is_gaussian_mixture(spec.name) else {}
    mean, std = real.mean(0), real.std(0).clamp_min(1e-8)
    real, fake = (real - mean) / std, (fake - mean) / std
    precision, recall = precision_recall(real, fake, k=3)
    return {"mmd": float(mmd(real, fake)), "precision": precision, "recall": recall, **modes}


def likelihood_metrics(values: Tensor, spec: DataSpec, *, exact: bool, kind: str) -> dict[str, float]:
    """Mean NLL in nats and bits/dim from log p(x) (exact) or from an NLL bound, per `kind`
    (see `GenerativeModel.likelihood_kind`): "dequantized" densities get the dequantization
    correction of `bits_per_dim`; "none" (a cross-entropy, not a likelihood) gets no bits/dim and
    is reported as `cross_entropy_bound_nats`. A bound is reported under names that say so."""
    nll = -values if exact else values
    if kind == "none":
        return {"cross_entropy_bound_nats": float(nll.mean())}
    return nll_metrics(nll, spec, kind=kind, key="nll" if exact else "nll_bound")


def nll_metrics(nll: Tensor, spec: DataSpec, *, kind: str, key: str) -> dict[str, float]:
    """Means of per-sample negative log-probabilities nll (N,) in nats, under `key`:

    kind "dequantized", "discrete", "continuous" (an NLL of x): key_nats and key_bits_per_dim, the
        dequantized ones with the correction of `bits_per_dim` (levels = spec.levels);
    kind "code" (-log p of a discrete code of x): key_bits_per_image = nll / ln 2 and
        key_bits_per_pixel = that / (H W) (per value for vectors), no bits/dim of x.
    """
    if kind == "code":
        bits = nll / math.log(2.0)
        pixels = math.prod(spec.shape[-2:]) if spec.kind == "image" else spec.dim
        return {f"{key}_bits_per_image": float(bits.mean()), f"{key}_bits_per_pixel": float(bits.mean()) / pixels}
    levels = spec.levels if kind == "dequantized" else None
    bpd = bits_per_dim(nll, spec.dim, levels=levels, value_range=spec.value_range)
    return {f"{key}_nats": float(nll.mean()), f"{key}_bits_per_dim": float(bpd.mean())}


def model_likelihood(model, x: Tensor, seed: int, likelihood_n: int | None = None) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The model's `log_prob` (exact) or `nll_bound` on held-out x (N, *shape), as `likelihood_metrics`,
    and notes as `measure_metrics` gives them. A model whose bound costs many network evaluations
    per sample (`costly_nll_bound`, a DDPM's variational bound: one per timestep) is evaluated on
    `likelihood_n` of the N samples (`held_out_subset`); {} and no note where the model has neither."""
    device = model.device
    parts: list[Tensor] = []
    kind = model.likelihood_kind()
    exact = model.exact_likelihood
    subset = held_out_subset(x, likelihood_n, seed) if model.costly_nll_bound and not exact else x
    try:
        with torch.no_grad():
            if exact:
                for chunk in subset.split(256):
                    parts.append(model.log_prob(chunk.to(device)).cpu())
            else:
                generator = torch.Generator().manual_seed(seed)
                for chunk in subset.split(64):
                    parts.append(model.nll_bound(chunk.to(device), generator=generator).cpu())
    except NotImplementedError:
        return {}, []
    unit = "images" if model.spec.kind == "image" else "samples"
    note = {"name": "nll" if exact else "nll_bound", "description": "exact log-likelihood" if exact else "the model's bound on the NLL",
            "samples": len(subset), "of": len(x), "unit": unit}  # fmt: skip
    return likelihood_metrics(torch.cat(parts), model.spec, exact=exact, kind=kind), [note]


def held_out_subset(x: Tensor, likelihood_n: int | None, seed: int) -> Tensor:
    """likelihood_n (default LIKELIHOOD_N) of the samples of x, drawn without replacement by a
    generator seeded with seed and kept in their order; all of x where it holds no more."""
    likelihood_n = LIKELIHOOD_N if likelihood_n is None else likelihood_n
    if len(x) <= likelihood_n:
        return x
    index = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:likelihood_n]
    return x[index.sort().values]


# held-out samples a costly likelihood (an ODE solve per sample) is evaluated on unless told otherwise
LIKELIHOOD_N = 256


def measure_metrics(model, x: Tensor, *, seed: int, likelihood_n: int = LIKELIHOOD_N, split: str = "test") -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The model's `likelihood_measures` on held-out x (N, *shape): their mean values (`nll_metrics`)
    and, for each, a note {"name", "description", "samples", "of", "unit"} saying how and on how
    many of the N samples ("images" or "samples") it was computed. A costly measure uses `likelihood_n` of the N samples, drawn without
    replacement from a generator seeded with `seed`; the others use all. Every draw a measure
    makes comes from one generator seeded with `seed`, so the same seed gives the same report."""
    check_likelihood_n(likelihood_n)
    metrics: dict[str, float] = {}
    notes: list[dict[str, Any]] = []
    unit = "images" if model.spec.kind == "image" else "samples"
    for measure in model.likelihood_measures():
        subset = held_out_subset(x, likelihood_n, seed) if measure.costly else x
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            nll = torch.cat([measure.nll(chunk.to(model.device), generator).detach().double().cpu() for chunk in subset.split(measure.batch_size)])
        if not torch.isfinite(nll).all():
            raise RunError(f"the model's {measure.name} is NaN or infinite on {int((~torch.isfinite(nll)).sum())} {split} {unit}; the run has diverged")
        metrics.update(nll_metrics(nll, model.spec, kind=measure.kind, key=measure.name))
        notes.append({"name": measure.name, "description": measure.description, "samples": len(subset), "of": len(x), "unit": unit})
    return metrics, notes


def check_likelihood_n(likelihood_n: int) -> None:
    if likelihood_n < 1:
        raise ConfigError(f"likelihood_n={likelihood_n} must be >= 1 (held-out samples for the costly likelihoods); pass e.g. --likelihood-n 256")


def default_extractor(spec: DataSpec) -> str | None:
    if spec.kind != "image":
        return None
    if spec.name in shipped_extractors():
        return spec.name
    raise ConfigError(
        f"no shipped feature extractor for {spec.name!r} (shipped: {', '.join(shipped_extractors())}); "
        f"train one with `python scripts/train_feature_extractor.py --data {spec.name}` and pass --extractor PATH, "
        "or pass pytorch-fid's Inception weights (.pth)"
    )


# Generated samples drawn by default when the held-out split is smaller: FID from a few hundred
# samples varies far more between seeds than between models (the README's VAE section has figures).
MIN_GENERATED = 1000


def format_report(report: dict[str, Any]) -> str:
    """A table: one row per evaluated generator, one column per metric."""
    rows = [k for k in report if isinstance(report[k], dict) and k != "table"]
    columns: list[str] = []
    for r in rows:
        columns += [c for c in report[r] if c not in columns]
    widths = [max(len(c), 9) + 2 for c in columns]
    head = f"{'':<8}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths))
    lines = [f"{report['split']} split: {report['n_real']} real vs {report['n_fake']} generated samples"
             + (f", features: {report['extractor']}" if report.get("extractor") else ""), head]
    for r in rows:
        cells = "".join(
            f"{report[r][c]:>{w}.4g}" if c in report[r] and math.isfinite(report[r][c]) else f"{'-':>{w}}"
            for c, w in zip(columns, widths)
        )
        lines.append(f"{r:<8}{cells}")
    for note in report.get("likelihoods", []):
        lines.append(f"{note['name']}: {note['description']}; on {note['samples']} of {note['of']} {report['split']} {note['unit']}")
    if "table" in report:
        lines += format_table_report(report["table"], report.get("table_target"), report["split"])
    return "\n".join(lines)


def format_table_report(t: dict[str, float], target: str | None, split: str) -> list[str]:
    """The lines that say what `genlab.metrics.tabular.table_metrics` measured, each with its scale."""
    lines = [f"as a table, against the training rows (in brackets: the real {split} rows in place of the synthetic ones):",
             f"  quality {t['quality']:.3f} ({t['holdout_quality']:.3f}) = mean of column shapes {t['column_shapes']:.3f} "
             f"({t['holdout_column_shapes']:.3f}) and pair trends {t['pair_trends']:.3f} ({t['holdout_pair_trends']:.3f}) "
             f"(SDMetrics' QualityReport; every pair: {t['pair_trends_all']:.3f})",
             f"  detection ROC AUC {t['detection_auc']:.3f} ({t['holdout_detection_auc']:.3f}; 0.5: cannot be told from training rows)"]
    if target is None:
        lines.append("  efficacy: no target column (pass --target COLUMN)")
    elif "tstr_r2" in t:
        lines.append(f"  efficacy for {target!r} on the {split} rows: R^2 trained on synthetic {t['tstr_r2']:.3f}, on real {t['trtr_r2']:.3f}")
    else:
        lines.append(f"  efficacy for {target!r} on the {split} rows: accuracy trained on synthetic {t.get('tstr_accuracy', math.nan):.3f}, on real "
                     f"{t.get('trtr_accuracy', math.nan):.3f}; ROC AUC {t.get('tstr_roc_auc', math.nan):.3f} vs {t.get('trtr_roc_auc', math.nan):.3f}")
    lines.append(f"  privacy: median distance to the closest training row {t['dcr_synthetic']:.3f} (held-out real rows "
                 f"{t['dcr_holdout']:.3f}); closer to training than to held-out rows {t['closer_to_train']:.1%} (50% ideal); "
                 f"exact copies {t['exact_copies']:.1%} (held-out rows {t['holdout_exact_copies']:.1%})")
    return lines
