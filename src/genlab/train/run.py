"""The run directory: what a training run leaves behind, and how to read it back.

    runs/vae/
      config.yaml        model name and config, data source and spec, training options
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

from genlab.errors import GenlabError


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


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise GenlabError(f"no run directory at '{run_dir}'; train one with `genlab train MODEL --out {run_dir}`")
    if not paths.config.is_file():
        raise GenlabError(f"'{run_dir}' is not a genlab run (no config.yaml in it); pass the --out folder of `genlab train`")
    return yaml.safe_load(paths.config.read_text())


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = RunPaths(Path(run_dir)).metrics
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_model(run_dir: str | Path, *, ema: bool = True, device: str | torch.device | None = None):
    """Rebuild the model of a run from config.yaml and its (EMA) weights, in eval mode."""
    from genlab import registry
    from genlab.data.dataset import DataSpec
    from genlab.train.checkpoint import load_weights

    cfg = read_run_config(run_dir)
    paths = RunPaths(Path(run_dir))
    entry = registry.get(cfg["model"])
    spec = DataSpec.from_dict(cfg["data_spec"])
    model = entry.model_class(entry.config_class.from_dict(cfg["model_config"]), spec)
    weights = paths.ema_weights if ema and paths.ema_weights.is_file() else paths.weights
    if not weights.is_file():
        raise GenlabError(f"run '{run_dir}' has no weights yet ({weights.name} missing); it may still be starting")
    load_weights(model, weights)
    if device is not None:
        model.to(device)
    return model.eval()
