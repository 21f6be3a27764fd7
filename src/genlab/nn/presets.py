"""Size presets: networks sized for the device they train on.

Every image model's config has `preset`: "cpu" (narrow networks that downsample early, so that a
training step on 28x28 to 64x64 images takes milliseconds on a laptop CPU), "paper" (the larger
networks of the papers, for a GPU), or "auto", which picks "paper" when torch sees a CUDA GPU and
"cpu" otherwise. A model resolves "auto" once, when it is built, and keeps the word it picked in its
config, so a run trained on one machine loads with the same networks on another. Fields a preset
sizes default to None ("the preset's"); a value given for one of them wins over the preset.

Small images that the models treat as vectors (side < 16: MLPs, e.g. the 8x8 digits) get the same
networks under both presets. A run saved before presets existed has no `preset` (or, for diffusion
models, "auto") in its config: `LEGACY_PRESET` rebuilds it with the networks it was trained with.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

import torch

from genlab.config import Config

SIZE_PRESETS = ("auto", "cpu", "paper")
# what a run saved before presets existed was built with
LEGACY_PRESET = "paper"

C = TypeVar("C", bound=Config)


def resolve_size_preset(preset: str) -> str:
    """"cpu" or "paper" for a preset word: "auto" is "paper" where torch sees a CUDA GPU, else "cpu"."""
    if preset != "auto":
        return preset
    return "paper" if torch.cuda.is_available() else "cpu"


def auto_preset_reason() -> str:
    """Why "auto" picks what it picks on this machine, for `genlab train MODEL --help`."""
    if torch.cuda.is_available():
        return f"auto -> paper: torch sees a CUDA GPU ({torch.cuda.get_device_name(0)})"
    return "auto -> cpu: torch sees no CUDA GPU, so the networks are sized for a CPU"


def size_config(config: C, presets: Mapping[str, Mapping[str, Any]], *, sized_data: bool) -> C:
    """`config` with its preset resolved and recorded, and every field of the preset's table that is
    None in `config` filled in; fields the user gave keep their values. sized_data: whether the data
    gets the preset's own networks (images the model convolves); other data take "paper"'s values,
    the same under both presets. Idempotent on a sized config.

    presets: {"cpu": {field: value, ...}, "paper": {...}}."""
    preset = resolve_size_preset(getattr(config, "preset"))
    values = presets[preset if sized_data else "paper"]
    fills = {name: value for name, value in values.items() if getattr(config, name) is None}
    if not fills and getattr(config, "preset") == preset:
        return config
    return dataclasses.replace(config, preset=preset, **fills)


def saved_config_values(config_class: type[Config], values: Mapping[str, Any]) -> dict[str, Any]:
    """The config values of a saved run (or a saved autoencoder record) as they build its networks
    today: a config saved before size presets existed has no `preset` (diffusion models saved "auto",
    which then meant the paper-size network for the image's side); it was built with the networks
    `LEGACY_PRESET` names. Configs saved since record the preset they resolved to, never "auto".
    A field added to a config since (its class's `added_fields`: {field: value, or a function of the
    saved values}) takes the value the older runs were built with, not today's preset's."""
    values = dict(values)
    if "preset" in config_class.field_names() and values.get("preset", "auto") == "auto":
        values["preset"] = LEGACY_PRESET
    for field, legacy in getattr(config_class, "added_fields", {}).items():
        if field not in values:
            values[field] = legacy(values) if callable(legacy) else legacy
    return values
