"""Class balancing with a class-conditional model: draw samples of the classes that have too few
until every class has as many as asked, and write the augmented dataset in the input's own format.

    counts = class_counts(data.labels, data.spec.num_classes)     # e.g. [357, 8]
    extra = plan_balance(counts, "balance")                         # {1: 349}: every class to the largest
    synthetic = generate_classes(model, extra, seed=0)              # Samples: x (349, D), labels all 1
    balance("train.csv", "balanced.csv", run="runs/tabular-train")  # the same, file to file

The samples come from p(x | y = k) by conditioning (`model.sample(n, cond=labels)`): the tabular
diffusion model fixes its label column (`condition_on`), the class-conditional image models take the
label as an input. Nothing is drawn and thrown away.

Formats (`DATA_FORMATS`): a CSV table (the input's bytes, then the synthetic rows decoded by the
run's `TableEncoder`, same columns, dtypes and category labels); a folder of images in class
sub-folders (a copy of the folder, the synthetic images as PNG in the training images' class
folders, named `synthetic-NNNNNN.png`); an .npz of samples and labels (the samples concatenated in
the input's dtype and layout, the labels in its own values). A named dataset (digits, mnist, ...) is
written as an .npz.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from genlab.apps.sampling import Samples, class_labels
from genlab.errors import ConfigError, DataError
from genlab.files import atomic_path

__all__ = ["DATA_FORMATS", "BalanceResult", "class_counts", "plan_balance", "generate_classes", "balance", "data_format",
           "source_path", "conditional_fields", "every_row_for_training"]

DATA_FORMATS = ("csv", "folder", "npz")
SYNTHETIC_PREFIX = "synthetic-"  # names of the generated images in a folder
SAMPLE_BATCH = 1024  # samples per model.sample call


@dataclasses.dataclass(frozen=True)
class BalanceResult:
    """What `balance` did: counts per class name before and after, the file or folder written, the
    run that generated the samples (trained by `balance` or given), and the format written."""

    before: dict[str, int]
    after: dict[str, int]
    out: Path
    run: Path | None
    format: str

    @property
    def added(self) -> int:
        return sum(self.after.values()) - sum(self.before.values())


def class_counts(labels: Tensor, num_classes: int) -> list[int]:
    """Samples of each class: labels (N,) in [0, num_classes) -> [count_0, ..., count_{K-1}]."""
    return torch.bincount(labels.long().reshape(-1), minlength=num_classes).tolist()


def plan_balance(counts: Sequence[int], goal: str | int | Mapping[Any, int] = "balance",
                 class_names: Sequence[str] | None = None) -> dict[int, int]:
    """How many samples to generate for each class index, {class: extra} (classes needing none left out).

    goal: "balance": every class up to the largest class's count; an int N (or "N"): every class up to
    at least N; {class: N} or "CLASS=N,CLASS=N" (a class by index or name): those classes up to N
    samples. Balancing only adds samples, so a goal below a class's count is refused."""
    names = list(class_names or [str(i) for i in range(len(counts))])
    if isinstance(goal, str):
        text = goal.strip()
        if text.lower() == "balance":
            top = max(counts)
            return {k: top - c for k, c in enumerate(counts) if c < top}
        if re.fullmatch(r"\d+", text):
            goal = int(text)
        else:
            pairs = [w.strip() for w in text.split(",") if w.strip()]
            if not pairs or any("=" not in p for p in pairs):
                raise ConfigError(f"counts {goal!r}: write balance, a number (every class to at least N) or CLASS=N,CLASS=N")
            goal = {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}
    if isinstance(goal, bool):
        raise ConfigError(f"counts {goal!r}: write balance, a number or CLASS=N")
    if isinstance(goal, int):
        if goal < 1:
            raise ConfigError(f"counts {goal}: give a positive number of samples per class")
        return {k: goal - c for k, c in enumerate(counts) if c < goal}
    wanted: dict[int, int] = {}
    for key, value in goal.items():
        k = _class_index(key, names)
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"counts {key}={value}: the number of samples must be a whole number") from None
        if n < counts[k]:
            raise ConfigError(f"counts {names[k]}={n}: class {names[k]!r} already has {counts[k]} samples; "
                              "balancing only adds samples, so ask for at least that many")
        wanted[k] = n - counts[k]
    return {k: n for k, n in wanted.items() if n > 0}


def _class_index(key: Any, names: list[str]) -> int:
    text = str(key).strip()
    if text in names:
        return names.index(text)
    if re.fullmatch(r"\d+", text) and int(text) < len(names):
        return int(text)
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    raise ConfigError(f"counts: {text!r} is not a class of the data; its classes are {shown} (or their indices)")


@torch.no_grad()
def generate_classes(model: Any, extra: Mapping[int, int], *, seed: int = 0, batch_size: int = SAMPLE_BATCH,
                     **sampling: Any) -> Samples:
    """extra[k] samples of each class k from p(x | y = k), by `model.sample(n, cond=labels)` in
    batches of at most `batch_size`, one generator seeded with `seed`. sampling: a diffusion run's
    sampler, steps, guidance_scale. Returns Samples(x (N, *shape) on the CPU, labels (N,)), class
    after class in index order."""
    from genlab.apps.sampling import sampling_options

    if model.num_classes is None:
        raise ConfigError(f"'{model.name}' was trained without class labels, so it cannot generate chosen classes; "
                          "train a class-conditional run (genlab balance trains one with --model)")
    classes = sorted(k for k, n in extra.items() if n > 0)
    outside = [k for k in classes if not 0 <= k < model.num_classes]
    if outside:
        raise ConfigError(f"class {outside[0]} is out of range: '{model.name}' was trained on {model.num_classes} classes")
    labels = torch.cat([class_labels([k], extra[k]) for k in classes]) if classes else torch.zeros(0, dtype=torch.long)
    options = sampling_options(model, classes=classes or None, **sampling)
    generator = torch.Generator().manual_seed(seed)
    parts = [model.sample(len(chunk), cond=chunk, generator=generator, **options).float().cpu()
             for chunk in labels.split(batch_size)]
    x = torch.cat(parts) if parts else torch.zeros(0, *model.spec.shape)
    bad = int((~torch.isfinite(x.reshape(len(x), -1))).any(1).sum()) if len(x) else 0
    if bad:
        raise ConfigError(f"{bad} of {len(x)} generated samples are not finite; the run's weights have diverged: retrain it")
    return Samples(x, labels)


def source_path(data: Any) -> Path | None:
    """The file or folder a dataset was loaded from (`Dataset.source` records paths absolute), or
    None for a named dataset."""
    name = str(data.source.get("name", ""))
    return Path(name) if os.path.isabs(name) else None


def data_format(data: Any) -> str:
    """The format a dataset came in, and so is written back in: csv (tables), folder (a folder of
    images) or npz (.npz files, named datasets, archives of images)."""
    if data.spec.kind == "table":
        return "csv"
    path = source_path(data)
    return "folder" if path is not None and path.is_dir() else "npz"


def conditional_fields(model_name: str, data: Any) -> dict[str, Any]:
    """The config fields that make `model_name` class-conditional on `data`: class_conditional=true
    where the model has that field; the tabular model conditions on the label column by default."""
    from genlab import registry

    entry = registry.get(model_name)
    if data.labels is None:
        hint = " (for a CSV: --data-option target=COLUMN)" if data.spec.kind == "table" else ""
        raise DataError(f"{data.spec.name!r} has no class labels{hint}; balancing needs labelled data")
    fields = entry.config_class.field_names()
    if "class_conditional" in fields:
        return {"class_conditional": True}
    if "condition_on" in fields:
        return {}
    conditional = sorted(e.name for e in registry.entries() if "class_conditional" in e.config_class.field_names()
                         and data.spec.kind in getattr(e.model_class, "data_kinds", (data.spec.kind,)))
    raise ConfigError(f"'{entry.name}' cannot generate chosen classes; balance with a class-conditional model: "
                      f"{', '.join(conditional + (['tabular'] if data.spec.kind == 'table' else []))}")


def default_balance_model(data: Any) -> str:
    """The model `balance` trains when none is named: the tabular diffusion model on tables, a
    class-conditional DDPM on images and vectors (README, "Class balancing")."""
    return "tabular" if data.spec.kind == "table" else "ddpm"


def balance(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    run: str | os.PathLike | None = None,
    model: str | None = None,
    counts: str | int | Mapping[Any, int] = "balance",
    data_options: Mapping[str, Any] | None = None,
    fields: Mapping[str, Any] | None = None,
    train_options: Mapping[str, Any] | None = None,
    run_out: str | os.PathLike | None = None,
    seed: int = 0,
    device: str | None = None,
    mark: str | None = None,
    sampling: Mapping[str, Any] | None = None,
    say: Any = None,
) -> BalanceResult:
    """What `genlab balance` does: load `data` (a CSV, an image folder, an .npz or a dataset name,
    with `data_options`), count its classes, generate the missing samples with the class-conditional
    run `run`, or, without one, train `model` (default `default_balance_model`) on all of the data
    (`every_row_for_training`) into `run_out` with `fields` and `train_options` first; then write the data and the
    samples to `out` in the input's format (`data_format`). mark: CSV only, a column added with
    True on synthetic rows. say: a print function for progress."""
    import genlab
    from genlab.train.run import load_model, read_run_config, read_table_encoder

    say = say or (lambda *a: None)
    options = dict(data_options or {})
    if run is not None and model is not None:
        raise ConfigError("give the generator once: a trained run (--run) or a model to train (--model), not both")
    if run is not None:
        cfg = read_run_config(run)
        if cfg.get("data_spec", {}).get("kind") == "table" and cfg["data"].get("target") and "target" not in options:
            options["target"] = cfg["data"]["target"]  # the run's label column, unless told otherwise
        for key in ("numeric", "kinds"):
            if key in cfg["data"] and key not in options:
                options[key] = cfg["data"][key]
    dataset = genlab.data.load(data, **options)
    fmt = data_format(dataset)
    source = source_path(dataset)  # None for a named dataset
    out = Path(out)
    _check_out(source, out, fmt, dataset)
    if dataset.labels is None:
        hint = " (for a CSV: --data-option target=COLUMN)" if dataset.spec.kind == "table" else ""
        raise DataError(f"{dataset.spec.name!r} has no class labels{hint}; balancing needs labelled data")
    if mark is not None and fmt != "csv":
        raise ConfigError("--mark-synthetic adds a column to a table; a folder marks its images by name (synthetic-*.png) "
                          "and an .npz by its order")
    names = list(dataset.spec.class_names or [str(i) for i in range(dataset.spec.num_classes)])
    before = class_counts(dataset.labels, len(names))
    extra = plan_balance(before, counts, names)

    run_dir = Path(run) if run is not None else None
    if run_dir is None and extra:
        name = model or default_balance_model(dataset)
        chosen = {**conditional_fields(name, dataset), **dict(fields or {})}
        run_dir = Path(run_out) if run_out is not None else _run_folder(name, dataset.spec.name)
        say(f"training {name} on {dataset!r} -> {run_dir}")
        torch.manual_seed(seed)
        trained = genlab.create(name, data=dataset, **chosen)
        genlab.fit(trained, every_row_for_training(dataset), out=run_dir, **{"seed": seed, **dict(train_options or {})})
    generator = None
    if run_dir is not None:
        generator = load_model(run_dir, device=device)
        _check_run_fits(generator, dataset, run_dir)
    if extra:
        say(f"generating {sum(extra.values())} samples: " + ", ".join(f"{names[k]} {n}" for k, n in sorted(extra.items())))
    samples = generate_classes(generator, extra, seed=seed, **dict(sampling or {})) if extra else \
        Samples(torch.zeros(0, *dataset.spec.shape), torch.zeros(0, dtype=torch.long))

    if fmt == "csv":
        encoder = read_table_encoder(run_dir) if run_dir is not None else dataset.encoder
        _write_csv(source, dataset, encoder, samples, out, sep=options.get("sep"), mark=mark)
    elif fmt == "folder":
        _write_folder(source, samples, names, out)
    else:
        _write_npz(source, dataset, options, samples, names, out)
    after = [c + extra.get(k, 0) for k, c in enumerate(before)]
    return BalanceResult(dict(zip(names, before)), dict(zip(names, after)), out, run_dir, fmt)


def every_row_for_training(dataset: Any) -> Any:
    """The dataset with every sample in its train split (its val split kept, for the logged loss
    only): a rare class has no samples to spare for held-out splits."""
    from genlab.data.dataset import Dataset

    splits = {"train": torch.arange(len(dataset))}
    if "val" in dataset.split_names and dataset.split_names != ["train"]:
        splits["val"] = dataset._splits["val"]
    return Dataset(dataset.storage, dataset.spec, dataset.labels, source=dataset.source, splits=splits,
                   frame=dataset.frame, encoder=dataset.encoder)


def _run_folder(model: str, data_name: str) -> Path:
    stem = Path("runs") / f"balance-{model}-{Path(data_name).stem}"
    out, k = stem, 2
    while out.exists():
        out = stem.with_name(f"{stem.name}-{k}")
        k += 1
    return out


def _check_out(source: Path | None, out: Path, fmt: str, dataset: Any) -> None:
    try:
        same = source is not None and out.exists() and out.resolve() == source.resolve()
    except OSError:
        same = False
    if same:
        raise ConfigError(f"--out '{out}' is the input itself; write the balanced data to another path")
    want = {"csv": ".csv", "npz": ".npz"}.get(fmt)
    if fmt == "folder":
        if out.suffix.lower() in (".csv", ".npz", ".npy"):
            raise ConfigError(f"--out '{out}': a folder of images is written as a folder; give a folder name without suffix")
        if out.exists():
            raise ConfigError(f"--out '{out}' exists; give a new folder (balance never writes into an existing one)")
    elif out.suffix.lower() != want:
        what = "a table is written as CSV" if fmt == "csv" else f"{dataset.spec.kind} data of {dataset.spec.name!r} is written as an .npz"
        raise ConfigError(f"--out '{out}': {what}; give a path ending in {want}")


def _check_run_fits(model: Any, dataset: Any, run_dir: Path) -> None:
    spec, run_spec = dataset.spec, model.spec
    if run_spec.kind != spec.kind or (tuple(run_spec.shape) != tuple(spec.shape) and spec.kind != "table"):
        raise ConfigError(f"run '{run_dir}' makes {run_spec.kind} samples of shape {tuple(run_spec.shape)}, and the data holds "
                          f"{spec.kind} of shape {tuple(spec.shape)}; balance with the data the run was trained on (and its --data-option)")
    if model.num_classes is None:
        raise ConfigError(f"run '{run_dir}' ({model.name}) was trained without class labels, so it cannot generate chosen "
                          "classes; train a class-conditional run, or let genlab balance train one (--model)")
    if tuple(run_spec.class_names or ()) != tuple(spec.class_names or ()):
        raise ConfigError(f"run '{run_dir}' knows the classes {', '.join(run_spec.class_names or ())}, the data has "
                          f"{', '.join(spec.class_names or ())}; balance with the data the run was trained on")
    if spec.kind == "table" and run_spec.target != spec.target:
        raise ConfigError(f"run '{run_dir}' conditions on column {run_spec.target!r}, the data's label column is {spec.target!r}; "
                          f"load the data with --data-option target={run_spec.target}")


# -- writers ----------------------------------------------------------------------------------------------
def _write_csv(source: Path | None, dataset: Any, encoder: Any, samples: Samples, out: Path, *, sep: str | None, mark: str | None) -> None:
    """The input file's bytes, then the decoded synthetic rows in its column order (mark: a column
    added, False on the input's rows, True on the synthetic ones)."""
    import pandas as pd

    sep = sep if sep is not None else ("\t" if source is not None and source.suffix.lower() == ".tsv" else ",")
    rows = encoder.decode(samples.x) if len(samples.x) else dataset.frame.iloc[:0]
    if list(map(str, rows.columns)) != list(map(str, dataset.frame.columns)):
        raise ConfigError(f"the run's table has the columns {', '.join(map(str, rows.columns))}, the data "
                          f"{', '.join(map(str, dataset.frame.columns))}; balance with the table the run was trained on")
    with atomic_path(out) as tmp:
        if mark is None and source is not None and source.is_file():
            data = source.read_bytes()
            with open(tmp, "wb") as f:
                f.write(data)
                if data and not data.endswith(b"\n"):
                    f.write(b"\n")
            rows.to_csv(tmp, mode="a", header=False, index=False, sep=sep)
        else:
            if mark is not None and mark in dataset.frame.columns:
                raise ConfigError(f"--mark-synthetic {mark}: the table already has a column {mark!r}; choose another name")
            real = dataset.frame.copy()
            if mark is not None:
                real[mark] = False
                rows = rows.assign(**{mark: True})
            pd.concat([real, rows], ignore_index=True).to_csv(tmp, index=False, sep=sep)


def _write_folder(source: Path, samples: Samples, names: list[str], out: Path) -> None:
    """A copy of the folder, then each synthetic image as a PNG in a folder of its class: where that
    class's training images are (first one found), else a new top-level folder of the class name.
    Written into a temporary folder beside `out` and renamed, so `out` is whole or absent."""
    from genlab.data.images import _layout, _list_folder
    from PIL import Image

    entries, _ = _list_folder(source)
    splits, classes = _layout(entries)
    homes: dict[str, Path] = {}
    for entry, split, cls in zip(entries, splits, classes):
        if cls is not None and split in (None, "train") and cls not in homes:
            homes[cls] = Path(*entry.parts[:-1])
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(".*"))
        pixels = (samples.x.clamp(0, 1) * 255).round().to(torch.uint8)
        counter: dict[int, int] = {}
        for image, label in zip(pixels, samples.labels.tolist()):
            folder = tmp / homes.get(names[label], Path(names[label]))
            folder.mkdir(parents=True, exist_ok=True)
            k = counter.get(label, 0)
            while (folder / f"{SYNTHETIC_PREFIX}{k:06d}.png").exists():
                k += 1
            counter[label] = k + 1
            array = image.permute(1, 2, 0).numpy()
            Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(folder / f"{SYNTHETIC_PREFIX}{k:06d}.png")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _label_values(names: list[str]) -> np.ndarray:
    """Class names as label values: integers when every name is one, else text (never objects)."""
    if all(re.fullmatch(r"[+-]?\d+", n) for n in names):
        return np.array([int(n) for n in names], dtype=np.int64)
    return np.array(names, dtype=str)


def _write_npz(source: Path | None, dataset: Any, options: Mapping[str, Any], samples: Samples, names: list[str], out: Path) -> None:
    """Samples and labels: the input's arrays (for an .npz or .npy) with the synthetic ones after
    them, in the input's dtype and layout, under the input's keys; a named dataset or folder: its
    stored samples (uint8 images, float vectors) and labels as x and y."""
    from genlab.data.files import X_KEYS, Y_KEYS

    x_key, y_key, x_real, y_real = "x", "y", None, None
    if source is not None and source.is_file() and source.suffix.lower() == ".npz":
        with np.load(source, allow_pickle=False) as loaded:
            keys = list(loaded.files)
            y_key = options.get("label_key") or next((k for k in Y_KEYS if k in keys), "y")
            x_key = options.get("key") or next((k for k in X_KEYS if k in keys), None) or next(k for k in keys if k != y_key)
            x_real, y_real = loaded[x_key], loaded[y_key] if y_key in keys else None
    if x_real is None or y_real is None:
        x_real = dataset.storage.numpy()
        y_real = _label_values(names)[dataset.labels.numpy()]
    synthetic = _like(samples.x, x_real, dataset.spec.shape)
    label_values = np.unique(y_real) if y_real.dtype.kind not in "f" else np.unique(y_real.astype(np.int64))
    y_new = label_values[samples.labels.numpy()].astype(y_real.dtype) if len(samples.labels) else y_real[:0]
    arrays = {x_key: np.concatenate([x_real, synthetic]), y_key: np.concatenate([y_real, y_new])}
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def _like(x: Tensor, real: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Synthetic samples (N, *shape) in [value range] as the input array holds them: its dtype
    (uint8 pixels 0..255, booleans, floats) and layout ((N, H, W), (N, H, W, C) or (N, C, H, W))."""
    array = x.numpy()
    if len(shape) == 3:
        c, h, w = shape
        if real.ndim == 3:
            array = array[:, 0]
        elif real.shape[1:] == (h, w, c) and real.shape[1:] != (c, h, w):
            array = array.transpose(0, 2, 3, 1)
    if real.dtype.kind in "iu":
        array = np.clip(np.round(array * 255.0), 0, 255)
    elif real.dtype.kind == "b":
        array = array > 0.5
    return np.ascontiguousarray(array.astype(real.dtype))
