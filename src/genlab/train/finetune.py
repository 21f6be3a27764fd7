"""Fine-tuning: a run that starts from another run's weights (`genlab.fit(..., init=RUN)`, `genlab
train MODEL --init RUN`), with parts held fixed (`freeze`) or low-rank adapters (`lora_rank`).

The optimizer and the learning-rate schedule start fresh; the weights are the run's EMA weights
where it kept them (the ones it samples with), its last weights otherwise. Buffers come along
(e.g. a VAE's `initialized_from_data`), so a data-dependent initialisation that runs once per model
keeps the pretrained values; one that describes the data (class counts) is redone on the new data.
"""

from __future__ import annotations

import os

from torch import nn

from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel

__all__ = ["freeze", "init_model_fields", "load_initial_weights", "trainable_summary"]

_SHOWN = 6  # differing layers named in an error


def _trained_name(run_dir: str | os.PathLike, model_name: str) -> dict:
    from genlab import registry
    from genlab.train.run import read_run_config

    cfg = read_run_config(run_dir)
    trained = registry.saved_entry(cfg["model"], cfg["model_config"]).name
    if trained != model_name:
        raise ConfigError(f"--init {run_dir}: that run trained {trained}, not {model_name}; fine-tune it as "
                          f"`genlab train {trained} --init {run_dir}`")
    return cfg


def init_model_fields(run_dir: str | os.PathLike, model_name: str) -> dict:
    """The model config of the run in `run_dir` (what `genlab train MODEL --init RUN` builds the model
    with, under its --set fields), or a ConfigError when the run trained another model."""
    from genlab import registry
    from genlab.nn.presets import saved_config_values

    cfg = _trained_name(run_dir, registry.get(model_name).name)
    return saved_config_values(registry.get(model_name).config_class, cfg["model_config"])


def load_initial_weights(model: GenerativeModel, run_dir: str | os.PathLike) -> None:
    """Copy the weights of the run in `run_dir` into `model` (in place). A ConfigError, naming the
    layers that differ, when the run trained another model, on data of another shape, or with
    another architecture."""
    from genlab.train.run import load_model

    _trained_name(run_dir, model.name)
    source = load_model(run_dir, ema=True, device="cpu")
    if tuple(source.spec.shape) != tuple(model.spec.shape):
        hint = (f"; read the new images at the run's size, e.g. --data-option resize={source.spec.shape[-1]}"
                + (f" --data-option grayscale={'true' if source.spec.shape[0] == 1 else 'false'}" if source.spec.shape[0] != model.spec.shape[0] else "")
                if source.spec.kind == "image" and len(source.spec.shape) == 3 else "")
        raise ConfigError(f"--init {run_dir}: the run was trained on samples of shape {tuple(source.spec.shape)}, and the "
                          f"data has {tuple(model.spec.shape)}{hint}")
    theirs, ours = source.state_dict(), model.state_dict()
    problems = [f"{k}: run {tuple(theirs[k].shape)}, model {tuple(ours[k].shape)}" for k in ours if k in theirs and theirs[k].shape != ours[k].shape]
    problems += [f"{k}: only in the model" for k in ours if k not in theirs]
    problems += [f"{k}: only in the run" for k in theirs if k not in ours]
    if problems:
        shown = "; ".join(problems[:_SHOWN]) + (f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else "")
        raise ConfigError(f"--init {run_dir}: its weights do not fit this {model.name} ({len(problems)} layer(s) differ: {shown}); "
                          "build the model with the run's config (`genlab train` takes it from the run; --set changes it) "
                          "and data with the run's classes and shape")
    model.load_state_dict(theirs)


def freeze(model: nn.Module, prefixes: tuple[str, ...]) -> int:
    """Hold the parameters whose names start with one of `prefixes` (a module's dotted name, e.g.
    "encoder" or "generator.trunk") fixed; returns how many tensors were frozen. An unknown prefix is
    a ConfigError listing the model's top-level modules."""
    names = [name for name, _ in model.named_parameters()]
    frozen = 0
    for prefix in prefixes:
        matched = [p for name, p in model.named_parameters() if name == prefix or name.startswith(prefix + ".")]
        if not matched:
            tops = sorted({name.split(".")[0] for name in names})
            raise ConfigError(f"--freeze {prefix}: no parameters of {getattr(model, 'name', type(model).__name__)} are named so; "
                              f"its modules are {', '.join(tops)} (a dotted name such as {tops[0]}.0 also works)")
        for p in matched:
            p.requires_grad_(False)
        frozen += len(matched)
    return frozen


def trainable_summary(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
