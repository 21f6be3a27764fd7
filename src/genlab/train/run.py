"""The run directory: what a training run leaves behind, and how to read it back.

    runs/vae/
      config.yaml        model name and config, data source and spec, training options
      table_encoder.json tables only: the columns, dtypes, categories and ranges (`read_table_encoder`)
      model.safetensors  weights;  ema.safetensors  EMA weights (when ema_decay > 0)
      state.pt           optimizers, schedulers, step, data order and RNG states (for --resume)
      metrics.jsonl      one JSON object per logged step (train and val rows)
      samples/           sample grids at intervals;  samples.png  the final grid
      curves.png         training curves of each loss term
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
import yaml

from genlab.errors import DataError, RunError, RunNotFoundError
from genlab.files import read_jsonl
from genlab.nn.presets import saved_config_values


@dataclasses.dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def weights(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def ema_weights(self) -> Path:
        return self.root / "ema.safetensors"

    @property
    def state(self) -> Path:
        return self.root / "state.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def warnings_log(self) -> Path:
        return self.root / "warnings.log"

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    @property
    def final_samples(self) -> Path:
        return self.root / "samples.png"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def table_encoder(self) -> Path:
        return self.root / "table_encoder.json"


# what config.yaml holds, with the type each entry must have
_CONFIG_ENTRIES = {"model": str, "model_config": dict, "data": dict, "data_spec": dict, "train": dict}


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """config.yaml of a run, checked: a mapping with the model, its config, the data source and spec,
    and the training options. A run directory is untrusted input, so YAML is read with the safe
    loader (no objects built) and every damage is a RunError naming the file."""
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise RunNotFoundError(f"no run directory at '{run_dir}'; train one with `genlab train MODEL --out {run_dir}`")
    if not paths.config.is_file():
        raise RunNotFoundError(f"'{run_dir}' is not a genlab run (no config.yaml in it); pass the --out folder of `genlab train`")
    try:
        cfg = yaml.safe_load(paths.config.read_text(errors="replace"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise RunError(f"{paths.config} is not valid YAML{where}; restore it from a copy of the run or retrain") from None
    if not isinstance(cfg, dict):
        raise RunError(f"{paths.config} holds {'nothing' if cfg is None else type(cfg).__name__}, not genlab's mapping of "
                       "model, data and training options; restore it from a copy of the run or retrain")  # fmt: skip
    for key, kind in _CONFIG_ENTRIES.items():
        if not isinstance(cfg.get(key), kind):
            raise RunError(f"{paths.config} has no valid '{key}' entry (a {kind.__name__}); restore it from a copy of the run or retrain")
    return cfg


def run_data_source(cfg: dict[str, Any]) -> dict[str, Any]:
    """The `genlab.data.load` keywords that reload a run's data as it was trained on. Table runs
    saved before tables had a `numeric` option were encoded with numeric="standard"."""
    source = dict(cfg["data"])
    if cfg.get("data_spec", {}).get("kind") == "table":
        source.setdefault("numeric", "standard")
    return source


def write_table_encoder(data: Any, paths: RunPaths) -> None:
    """Keep a table's encoder (`TableEncoder.to_dict`) in the run, so that its samples decode to rows
    without the data at hand; other data writes nothing."""
    if getattr(data, "encoder", None) is not None:
        from genlab.train.checkpoint import save_json

        save_json(data.encoder.to_dict(), paths.table_encoder)


def read_table_encoder(run_dir: str | Path):
    """The `TableEncoder` of a run trained on a table: from its table_encoder.json, or, for runs that
    lack one, refitted on the data its config.yaml names. `encoder.decode(model.sample(n))` is then
    a DataFrame with the table's columns and dtypes:

        model = genlab.load("runs/vae-iris")
        rows = read_table_encoder("runs/vae-iris").decode(model.sample(100))

    The file is parsed as JSON and checked field by field (`TableEncoder.from_dict`): a run folder may
    come from anyone. Raises DataError for a run on images or vectors."""
    from genlab.data.tables import TableEncoder

    cfg = read_run_config(run_dir)
    paths = RunPaths(Path(run_dir))
    kind = cfg.get("data_spec", {}).get("kind")
    if kind != "table":
        raise DataError(f"run '{run_dir}' was trained on {kind} data, not a table; only table runs decode to rows (write .png, .npy or .pt)")
    if paths.table_encoder.is_file():
        try:
            description = json.loads(paths.table_encoder.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"'{paths.table_encoder}' is not valid JSON ({exc}); delete it to refit the encoder on the run's data") from None
        return TableEncoder.from_dict(description)
    import genlab.data

    encoder = genlab.data.load(**run_data_source(cfg)).encoder
    if encoder is None:
        raise DataError(f"the data of run '{run_dir}' ({cfg['data'].get('name')}) no longer loads as a table")
    return encoder


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl; a torn last line (a killed run) is dropped."""
    path = RunPaths(Path(run_dir)).metrics
    if not path.is_file():
        return []
    try:
        rows = read_jsonl(path)
    except ValueError as exc:
        raise RunError(f"{exc}; remove that line to go on") from None
    if not all(isinstance(row.get("step"), int) for row in rows):
        raise RunError(f"{path} has rows without an integer 'step'; it is not genlab's metrics log")
    return rows


def resume_settings(run_dir: str | Path, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model config and data source to resume the run in `run_dir` as `model` with, or a
    RunError when the run trained another model (its config would not fit this one's)."""
    from genlab import registry

    cfg = read_run_config(run_dir)
    entry = registry.get(model)
    wanted, trained = entry.name, registry.saved_entry(cfg["model"], cfg["model_config"]).name
    if wanted != trained:
        raise RunError(f"cannot resume '{run_dir}' as {wanted}: it trained {trained}; use `genlab train {trained} --out {run_dir} --resume`, or choose another --out")
    return saved_config_values(entry.config_class, cfg["model_config"]), run_data_source(cfg)


def load_model(run_dir: str | Path, *, ema: bool = True, device: str | torch.device | None = None):
    """Rebuild the model of a run from config.yaml and its (EMA) weights, in eval mode."""
    from genlab import registry
    from genlab.data.dataset import DataSpec
    from genlab.train.checkpoint import load_weights

    cfg = read_run_config(run_dir)
    paths = RunPaths(Path(run_dir))
    entry = registry.saved_entry(cfg["model"], cfg["model_config"])
    try:
        spec = DataSpec.from_dict(cfg["data_spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(f"{paths.config}: its data_spec is damaged ({exc}); restore it from a copy of the run or retrain") from None
    model = entry.model_class(entry.config_class.from_dict(saved_config_values(entry.config_class, cfg["model_config"])), spec)
    weights = paths.ema_weights if ema and paths.ema_weights.is_file() else paths.weights
    if not weights.is_file():
        raise RunNotFoundError(f"run '{run_dir}' has no weights yet ({weights.name} missing); it may still be starting")
    load_weights(model, weights)
    if device is not None:
        from genlab.train.distributed import check_device

        model.to(check_device(device))
    return model.eval()

