"""Sampling a trained model the way `genlab sample` does: chosen classes, a diffusion run's sampler,
steps and guidance chosen at sampling time, and files of every kind (a PNG grid, .npy or .pt tensors,
CSV rows for tables).

    samples = draw_samples(model, classes="all", n=8)  # 8 samples of each class, in class order
    samples.x.shape, samples.labels[:10]                 # (80, 1, 8, 8), 0 0 0 0 0 0 0 0 1 1
    write_samples(samples, model.spec, "grid.png")       # one grid row per class (nrow = 8 per row)

Classes are an index (3), several ("1,4,7" or [1, 4, 7]), "all", or a class name of the data
("setosa"); every class-conditional model takes them through `model.sample(n, cond=labels)`, which
checks them once more (`GenerativeModel.check_labels`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from genlab import registry
from genlab.data.dataset import DataSpec
from genlab.errors import ConfigError, RunError
from genlab.files import atomic_path, atomic_write
from genlab.models.base import GenerativeModel
from genlab.models.diffusion.model import DiffusionModel
from genlab.models.diffusion.samplers import get_sampler

__all__ = ["DEFAULT_SAMPLES", "DEFAULT_PER_CLASS", "Samples", "resolve_classes", "sampling_options", "draw_samples",
           "class_labels", "parse_where", "where_conditions", "write_samples", "sample_run"]

DEFAULT_SAMPLES = 64  # samples drawn when n is not given: of no class or of one class
# what write_samples writes: pictures (by matplotlib or PIL), tensors, table rows
WRITTEN_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg", ".npy", ".pt", ".csv")
DEFAULT_PER_CLASS = 8  # samples of each class when several classes are asked for and n is not given
# the keywords of `DiffusionModel.sample` chosen at sampling time, with their CLI flags
DIFFUSION_OPTIONS = {"sampler": "--sampler", "steps": "--steps", "guidance_scale": "--guidance-scale"}


@dataclasses.dataclass(frozen=True)
class Samples:
    """What `draw_samples` drew: x (N, *spec.shape) in the data's space, on the CPU; labels (N,) the
    class each sample was drawn for, or None; per_row: samples per class when several classes were
    asked for (the rows of a grid with one row per class), else None."""

    x: Tensor
    labels: Tensor | None = None
    per_row: int | None = None


def resolve_classes(model: GenerativeModel, classes: str | int | Sequence[int] | None) -> list[int] | None:
    """`classes` as class indices in [0, model.num_classes): an int, a sequence of ints, or a string of
    comma-separated indices or class names, or "all"; None stays None. Raises ConfigError, naming the
    fix, for a model trained without labels or a class it does not know."""
    if classes is None:
        return None
    k = model.num_classes
    if k is None:
        raise ConfigError(_unconditional(model))
    names = list(model.spec.class_names or ())
    named = names and names != [str(i) for i in range(k)]  # digits' names are their indices
    known = f"0-{k - 1}" + (f" or a name ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})" if named else "")
    if isinstance(classes, str):
        words = [w.strip() for w in classes.split(",") if w.strip()]
        if [w.lower() for w in words] == ["all"]:
            return list(range(k))
        if not words:
            raise ConfigError(f"no class given; give a class index {known}, a comma list such as 1,4,7, or all")
        chosen = []
        for word in words:
            if re.fullmatch(r"[+-]?\d+", word):
                chosen.append(int(word))
            elif word in names:
                chosen.append(names.index(word))
            else:
                raise ConfigError(f"class {word!r} is not a class of {model.spec.name!r}; give an index {known}, or all")
    elif isinstance(classes, int) and not isinstance(classes, bool):
        chosen = [classes]
    else:
        chosen = [int(c) for c in classes]
    if not chosen:
        raise ConfigError(f"no class given; give a class index {known}, several, or all")
    outside = [c for c in chosen if not 0 <= c < k]
    if outside:
        raise ConfigError(f"class {outside[0]} is out of range: '{model.name}' was trained on {k} classes, {known}")
    return chosen


def _unconditional(model: GenerativeModel) -> str:
    entry = registry.get(model.name)
    conditional = sorted(e.name for e in registry.entries() if _conditional_by_default(e.config_class))
    if "class_conditional" in entry.config_class.field_names():
        how = "train it with --set class_conditional=true (on labelled data) to sample chosen classes"
        return f"'{model.name}' was trained without class labels (class_conditional=false), so it takes no class; {how}"
    return (f"'{model.name}' takes no class labels; class-conditional models are {', '.join(conditional)} and, with "
            "--set class_conditional=true, those whose `genlab train MODEL --help` lists class_conditional")


def _conditional_by_default(config_class: type) -> bool:
    return any(f.name == "class_conditional" and f.default is True for f in dataclasses.fields(config_class))


def sampling_options(
    model: GenerativeModel, *, sampler: str | None = None, steps: int | None = None, guidance_scale: float | None = None,
    classes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The keywords of a diffusion model's `sample` that were given (sampler "auto" stands for the
    model's own and is dropped); {} when none was. Raises ConfigError when a model of another family
    gets any (they are diffusion options), for an unknown sampler, steps < 1, a negative guidance
    scale, or guidance w > 0 on a model trained without labels or without `classes` (the resolved
    classes of the samples) to steer towards."""
    given = {k: v for k, v in (("sampler", sampler), ("steps", steps), ("guidance_scale", guidance_scale)) if v is not None}
    if given and not isinstance(model, DiffusionModel):
        flags = " and ".join(DIFFUSION_OPTIONS[k] for k in given)
        family = registry.get(model.name).family if model.name else "non-diffusion"
        verb = "is a diffusion option" if len(given) == 1 else "are diffusion options"
        raise ConfigError(f"{flags} {verb}; '{model.name}' is a {family} model, which has no sampler to choose")
    if given.get("sampler") == "auto":
        del given["sampler"]
    if "sampler" in given:
        get_sampler(given["sampler"])  # raises, naming the samplers there are
    if "steps" in given and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ConfigError(f"steps={steps!r}: a sampler takes 1 or more steps")
    if "guidance_scale" in given:
        if guidance_scale < 0:
            raise ConfigError(f"guidance scale {guidance_scale} must be >= 0 (0: no guidance)")
        if guidance_scale > 0 and model.num_classes is None:
            raise ConfigError(
                f"classifier-free guidance needs a class-conditional diffusion run; '{model.name}' was trained without labels "
                "(train with --set class_conditional=true)"
            )
        if guidance_scale > 0 and not classes:
            raise ConfigError("classifier-free guidance steers samples towards a class; choose one (--class 3, 1,4,7 or all)")
    return given


def _check_count(n: int | None) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"n={n!r} must be a positive number of samples")


def class_labels(classes: Sequence[int], per_class: int) -> Tensor:
    """(len(classes) * per_class,) long labels: per_class copies of each class, in order."""
    return torch.tensor(list(classes), dtype=torch.long).repeat_interleave(per_class)


@torch.no_grad()
def draw_samples(
    model: GenerativeModel,
    n: int | None = None,
    *,
    classes: str | int | Sequence[int] | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
    where: dict[str, Any] | None = None,
    encoder: Any = None,
    prompt: str | None = None,
) -> Samples:
    """Draw samples with torch.Generator().manual_seed(seed), in one `model.sample` call.

    n: the number of samples (default DEFAULT_SAMPLES); with several classes, the number of each
    class (default DEFAULT_PER_CLASS), drawn class after class so a grid of `per_row` = n columns
    has one row per class. classes: see `resolve_classes`. sampler, steps, guidance_scale: diffusion
    runs only (`sampling_options`); guidance (classifier-free, w > 0) needs classes to steer towards.
    where: table runs: {column: value} to draw rows from p(row | column = value), see
    `where_conditions` (`encoder`, the run's TableEncoder, names the categories). prompt: a text
    for a text-conditioned run (`text-ddpm`), with classifier-free guidance `guidance_scale` (default:
    the run's).
    """
    if prompt is not None:
        return _prompted(model, prompt, n, classes=classes, where=where, sampler=sampler, steps=steps,
                         guidance_scale=guidance_scale, seed=seed)
    if where:
        conditions, label = where_conditions(model, where, encoder)
        if conditions is not None:
            if classes is not None:
                raise ConfigError("give the rows' condition once: --where or --class, not both")
            x = model.sample_where(n or DEFAULT_SAMPLES, conditions, generator=torch.Generator().manual_seed(seed))
            return Samples(x.float().cpu())
        if classes is not None and resolve_classes(model, classes) != [label]:
            raise ConfigError("give the rows' condition once: --where or --class, not both")
        classes = [label]
    chosen = resolve_classes(model, classes)
    options = sampling_options(model, sampler=sampler, steps=steps, guidance_scale=guidance_scale, classes=chosen)
    _check_count(n)
    labels, per_row = None, None
    if chosen is not None and len(chosen) > 1:
        per_row = n or DEFAULT_PER_CLASS
        labels = class_labels(chosen, per_row)
    elif chosen is not None:
        labels = class_labels(chosen, n or DEFAULT_SAMPLES)
    count = len(labels) if labels is not None else n or DEFAULT_SAMPLES
    if labels is not None:
        options["cond"] = labels
    x = model.sample(count, generator=torch.Generator().manual_seed(seed), **options)
    return Samples(x.float().cpu(), labels, per_row)


def parse_where(items: Sequence[str] | str | None) -> dict[str, str]:
    """COLUMN=VALUE words (a list, or one string with commas) as {column: value text}."""
    if not items:
        return {}
    words = [w for item in ([items] if isinstance(items, str) else items) for w in str(item).split(",") if w.strip()]
    bad = [w for w in words if "=" not in w or not w.split("=", 1)[0].strip()]
    if bad:
        raise ConfigError(f"--where {bad[0]!r}: write COLUMN=VALUE, e.g. --where species=Gentoo")
    return {k.strip(): v.strip() for k, v in (w.split("=", 1) for w in words)}


def where_conditions(model: GenerativeModel, where: dict[str, Any], encoder: Any) -> tuple[dict[str, int] | None, int | None]:
    """{column: value} -> ({column: category index}, None) for a model that conditions on columns
    (`sample_where`, the tabular diffusion model), or (None, class index) for a class-conditional
    model when the one column is the data's label column. Values are matched against the
    encoder's categories by their text. Raises ConfigError naming the fix otherwise."""
    if model.spec.kind != "table" or encoder is None:
        raise ConfigError(f"--where conditions on a table's columns, and '{model.name}' was trained on {model.spec.kind} data; "
                          "use --class for class-conditional image models")
    indices = {}
    for column, value in where.items():
        info = encoder.column(column)
        if info.kind != "categorical":
            raise ConfigError(f"--where {column}={value}: column {column!r} is numeric; rows can be conditioned on categorical columns")
        texts = [str(c) for c in info.categories]
        if str(value) not in texts:
            shown = ", ".join(texts[:12]) + (", ..." if len(texts) > 12 else "")
            raise ConfigError(f"--where {column}={value}: {value!r} is not a value of {column!r}; its values are {shown}")
        indices[column] = texts.index(str(value))
    if hasattr(model, "sample_where"):
        return indices, None
    if len(indices) == 1 and model.num_classes is not None and next(iter(indices)) == model.spec.target:
        return None, next(iter(indices.values()))
    label = f" (its label column {model.spec.target!r} with --where, or --class)" if model.num_classes is not None else ""
    raise ConfigError(f"'{model.name}' cannot condition on {', '.join(indices)}{label}; train `genlab train tabular` with "
                      f"--set condition_on={','.join(indices)} to sample p(row | {', '.join(indices)})")


def write_samples(samples: Samples, spec: DataSpec, out: str | Path, *, encoder: Any = None) -> Path:
    """Write samples to `out` by its suffix, atomically: .pt (torch.save of x) or .npy (x as a NumPy
    array); .csv (tables only, `encoder` a `TableEncoder`): the decoded rows with the table's columns,
    dtypes and category labels, numbers clipped to the training range; anything else: a picture
    (`genlab.viz.plot_samples`), image grids with `per_row` images a row. Returns the path."""
    import numpy as np

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".csv":
        if encoder is None:
            raise ConfigError(f"'{out}': a .csv holds table rows, and {spec.name!r} is {spec.kind} data; write .png, .npy or .pt")
        frame = encoder.decode(samples.x)
        with atomic_path(out) as tmp:
            frame.to_csv(tmp, index=False)
        return out
    if suffix == ".pt":
        return atomic_write(out, lambda f: torch.save(samples.x, f))
    if suffix == ".npy":
        return atomic_write(out, lambda f: np.save(f, samples.x.numpy()))
    from genlab.viz import plot_samples

    rows = {"nrow": samples.per_row} if spec.kind == "image" and samples.per_row else {}
    return plot_samples(samples.x, spec, out, **rows)


def sample_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    n: int | None = None,
    classes: str | int | Sequence[int] | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
    ema: bool = True,
    device: str | None = None,
    where: dict[str, Any] | None = None,
    then: str | Path | None = None,
    at: float | None = None,
    prompt: str | None = None,
) -> tuple[Path, Samples]:
    """What `genlab sample` does: load the run (`genlab.load`), `draw_samples` and `write_samples` to
    `out` (default RUN/sample.png); a .csv `out` takes the run's table encoder
    (`genlab.train.read_table_encoder`) and is refused, before sampling, for runs not on a table.
    then, at: a second diffusion run that finishes the reverse process from the share `at` of the
    way (`genlab.apps.handoff`)."""
    from genlab.train.run import load_model, read_table_encoder

    if (then is None) != (at is None):
        raise ConfigError("--at needs --then (the run that takes over) and --then needs --at (where, in (0, 1))")
    model = load_model(run_dir, ema=ema, device=device)
    out = Path(out) if out is not None else Path(run_dir) / "sample.png"
    encoder = None
    if out.suffix.lower() == ".csv" and model.spec.kind != "table":
        raise ConfigError(f"'{out}': a .csv holds table rows, and run '{run_dir}' was trained on {model.spec.kind} data; write .png, .npy or .pt")
    if model.spec.kind == "table" and (out.suffix.lower() == ".csv" or where):
        encoder = read_table_encoder(run_dir)
    if out.suffix.lower() not in WRITTEN_SUFFIXES:
        raise ConfigError(f"'{out}': genlab writes samples as {', '.join(WRITTEN_SUFFIXES)}; not {out.suffix or 'a file without suffix'!r}")
    if then is not None:
        if prompt is not None:
            raise ConfigError("--prompt with --then is not supported: a hand-off runs two models of the images alone")
        samples = _hand_off_samples(model, load_model(then, ema=ema, device=device), at, n, classes=classes, sampler=sampler,
                                    steps=steps, guidance_scale=guidance_scale, seed=seed)
    else:
        samples = draw_samples(model, n, classes=classes, sampler=sampler, steps=steps, guidance_scale=guidance_scale, seed=seed,
                               where=where, encoder=encoder, prompt=prompt)
    bad = int((~torch.isfinite(samples.x.reshape(len(samples.x), -1))).any(1).sum())
    if bad:
        raise RunError(f"{bad} of {len(samples.x)} samples of run '{run_dir}' are not finite (NaN or infinite), so nothing was written; "
                       "its weights have diverged: resume it from an earlier checkpoint with a smaller --lr, or retrain")  # fmt: skip
    return write_samples(samples, model.spec, out, encoder=encoder), samples


def _hand_off_samples(first: GenerativeModel, second: GenerativeModel, at: float, n: int | None, *, classes, sampler, steps,
                      guidance_scale, seed: int) -> Samples:
    """`draw_samples` for a hand-off: the same classes, options and seed, `hand_off` in place of one model's sample."""
    from genlab.apps.handoff import check_hand_off, hand_off

    check_hand_off(first, second, at)
    chosen = resolve_classes(first, classes)
    options = sampling_options(first, sampler=sampler, steps=steps, guidance_scale=guidance_scale, classes=chosen)
    _check_count(n)
    per_row = (n or DEFAULT_PER_CLASS) if chosen is not None and len(chosen) > 1 else None
    labels = None if chosen is None else class_labels(chosen, per_row or n or DEFAULT_SAMPLES)
    count = len(labels) if labels is not None else n or DEFAULT_SAMPLES
    x = hand_off(first, second, count, at=at, cond=labels, generator=torch.Generator().manual_seed(seed), **options)
    return Samples(x.float().cpu(), labels, per_row)


def _prompted(model: GenerativeModel, prompt: str, n: int | None, *, classes, where, sampler, steps, guidance_scale,
              seed: int) -> Samples:
    """`draw_samples` given a text prompt: n samples of E(prompt), guided by w."""
    if not callable(getattr(model, "prompt_embeddings", None)):
        raise ConfigError(f"--prompt needs a text-conditioned run (text-ddpm); '{model.name}' takes no text"
                          + ("; it takes --class" if getattr(model, "num_classes", None) else ""))
    if classes is not None or where:
        raise ConfigError("give --prompt or --class/--where, not both")
    _check_count(n)
    options = sampling_options(model, sampler=sampler, steps=steps)
    if guidance_scale is not None:
        if guidance_scale < 0:
            raise ConfigError(f"guidance scale {guidance_scale} must be >= 0 (0: no guidance)")
        options["guidance_scale"] = guidance_scale
    count = n or DEFAULT_SAMPLES
    embedding = model.prompt_embeddings([prompt]).expand(count, -1)
    x = model.sample(count, cond=embedding, generator=torch.Generator().manual_seed(seed), **options)
    return Samples(x.float().cpu())

