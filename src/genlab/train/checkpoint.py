"""Saving and loading training state and run files, atomically (see genlab.files); the weights'
safetensors reader and writer are `genlab.weights`'s, re-exported here."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
import yaml
from genlab.errors import RunError
from genlab.files import atomic_path
from genlab.weights import first_line, load_weights, save_weights

__all__ = ["STATE_KEYS", "load_state", "load_weights", "save_json", "save_torch", "save_weights", "save_yaml"]


def load_state(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The training state `save_torch` wrote (state.pt), loaded with `weights_only=True`: tensors,
    numbers, strings and containers only, so a crafted pickle in an untrusted run folder cannot run
    code. Anything else, or a damaged file, is a RunError naming the file."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "allowed global" not in str(exc):  # not a forbidden object, just bytes that do not unpickle
            raise RunError(f"{path} is damaged or not a checkpoint (it does not unpickle); delete it to start over, or restore it from a copy") from None
        raise RunError(f"{path} holds objects other than tensors and numbers, which genlab never writes; it was not "
                       "loaded (a pickle payload cannot run). Delete it and resume from the weights by retraining") from None  # fmt: skip
    except Exception as exc:  # bytes that are no checkpoint fail inside the unpickler in many ways
        raise RunError(f"{path} is damaged or truncated ({first_line(exc)}); delete it to start over, or restore it from a copy") from None
    if not isinstance(state, dict) or not STATE_KEYS <= set(state):
        raise RunError(f"{path} is not a genlab training state (it lacks {sorted(STATE_KEYS - set(state)) if isinstance(state, dict) else 'a mapping'})")
    return state


# what `genlab.fit` writes into state.pt
STATE_KEYS = {"step", "model", "optimizers", "schedulers", "scaler", "sampler", "rng"}


def save_torch(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_yaml(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(obj, sort_keys=False))


def save_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))
