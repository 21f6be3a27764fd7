"""Model names -> (model class, config class); `create` builds one, `load` restores a trained run."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from genlab.config import Config
from genlab.errors import ArgumentTypeError, ConfigError

if TYPE_CHECKING:
    from genlab.data.dataset import DataSpec, Dataset
    from genlab.models.base import GenerativeModel


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    model_class: type
    config_class: type[Config]
    family: str
    summary: str
    formerly: tuple[str, ...] = ()  # names this model was registered under before (its old runs name it so)


_REGISTRY: dict[str, Entry] = {}


def register(name: str, config_class: type[Config], *, family: str, summary: str = "",
             formerly: tuple[str, ...] = ()) -> Callable[[type], type]:
    """Class decorator: `@register("vae", VAEConfig, family="latent")` next to the model class.
    formerly: names the model had before a rename, so that `saved_entry` reads its old runs."""

    def decorate(model_class: type) -> type:
        previous = _REGISTRY.get(name)
        # the same class imported twice (e.g. by file path and by module name) is not a clash
        if previous is not None and previous.model_class.__qualname__ != model_class.__qualname__:
            raise ConfigError(f"model name {name!r} is registered twice ({_REGISTRY[name].model_class.__name__}, {model_class.__name__})")
        model_class.name = name
        model_class.config_class = config_class
        doc_lines = (model_class.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Entry(name, model_class, config_class, family, summary or (doc_lines[0] if doc_lines else ""), formerly)
        return model_class

    return decorate


def _ensure_loaded() -> None:
    import genlab.models  # noqa: F401  (importing registers every family)


def entries() -> list[Entry]:
    _ensure_loaded()
    return sorted(_REGISTRY.values(), key=lambda e: (e.family, e.name))


def get(name: str) -> Entry:
    if not isinstance(name, str):
        raise ArgumentTypeError(f"a model name is a string such as 'vae', not {type(name).__name__} {name!r} (see `genlab list`)")
    _ensure_loaded()
    key = name.lower().replace("_", "-")
    for candidate in (name, key, key.replace("-", "_")):
        if candidate in _REGISTRY:
            return _REGISTRY[candidate]
    raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))} (see `genlab list`)")


def saved_entry(name: str, fields: dict[str, Any]) -> Entry:
    """The model a run saved as `name` with config `fields` is: `get(name)`, or, when those fields
    are not its config's and a model formerly registered as `name` takes them all, that model (a
    run trained before the name moved to another model)."""
    entry = get(name)
    known = {f.name for f in dataclasses.fields(entry.config_class)}
    if set(fields) <= known:
        return entry
    for other in _REGISTRY.values():
        if name in other.formerly and set(fields) <= {f.name for f in dataclasses.fields(other.config_class)}:
            return other
    return entry


def create(name: str, data: "Dataset | DataSpec | None" = None, **fields: Any) -> "GenerativeModel":
    """Build model `name` for `data` (a Dataset or its DataSpec), config fields as keywords.

    >>> import genlab
    >>> model = genlab.create("vae", data=genlab.data.load("digits"), latent_dim=8)
    >>> model.config.latent_dim
    8
    """
    from genlab.data.dataset import DataSpec

    entry = get(name)
    spec = getattr(data, "spec", data)
    if not isinstance(spec, DataSpec):
        got = "nothing" if data is None else f"{type(data).__name__} {data!r}"[:80]
        raise ArgumentTypeError(f"create({entry.name!r}) needs data=: a Dataset from genlab.data.load(...) or its DataSpec, "
                                f"not {got}; e.g. genlab.create({entry.name!r}, data=genlab.data.load('digits'))")  # fmt: skip
    kinds = entry.model_class.data_kinds
    if spec.kind not in kinds:
        others = [e.name for e in entries() if spec.kind in e.model_class.data_kinds]
        raise ConfigError(
            f"model {entry.name!r} is built for {' and '.join(kinds)} data, and {spec.name!r} is {spec.kind} data; "
            f"models for {spec.kind} data: {', '.join(others)}"
        )
    config = entry.config_class.from_dict(fields)
    return entry.model_class(config, spec)


def load(run_dir: str | Path, *, ema: bool = True, device: str | None = None) -> "GenerativeModel":
    """Restore a trained model from its run directory (config + weights), ready to sample.

    ema: load the exponential-moving-average weights when the run kept them.
    """
    from genlab.train.run import load_model

    if not isinstance(run_dir, (str, os.PathLike)):
        raise ArgumentTypeError(f"load() takes a run directory (a path), not {type(run_dir).__name__} {run_dir!r}")
    return load_model(run_dir, ema=ema, device=device)
