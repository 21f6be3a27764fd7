"""Saving and loading weights and training state, atomically (see genlab.files)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from genlab.errors import RunError
from genlab.files import atomic_path


def save_weights(module: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write a module's state dict as safetensors. Tied tensors are stored once per name (cloned)."""
    state = {k: v.detach().contiguous().clone() if _shares_storage(v) else v.detach().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def _shares_storage(t: torch.Tensor) -> bool:
    # safetensors refuses views into a larger storage; cloning such tensors is cheap for our sizes
    return t.untyped_storage().nbytes() != t.numel() * t.element_size()


def load_weights(module: nn.Module, path: str | Path, device: torch.device | str | None = None) -> None:
    """Load safetensors weights into `module`; a damaged file, or weights of another model or shape,
    is a RunError naming the file (safetensors holds tensors only: nothing in it runs)."""
    try:
        state = load_file(str(path), device=str(device) if device is not None else "cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise RunError(f"{path} is damaged or not a safetensors file ({_first_line(exc)}); restore it from a copy of the run or retrain") from None
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise RunError(f"{path} holds weights of another model or shape than its config.yaml describes "
                       f"({_first_line(exc, skip='Error(s) in loading')}); restore the run's files together or retrain") from None  # fmt: skip


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
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as exc:
        raise RunError(f"{path} is damaged or truncated ({_first_line(exc)}); delete it to start over, or restore it from a copy") from None
    if not isinstance(state, dict) or not STATE_KEYS <= set(state):
        raise RunError(f"{path} is not a genlab training state (it lacks {sorted(STATE_KEYS - set(state)) if isinstance(state, dict) else 'a mapping'})")
    return state


# what `genlab.fit` writes into state.pt
STATE_KEYS = {"step", "model", "optimizers", "schedulers", "scaler", "sampler", "rng"}


def _first_line(exc: BaseException, skip: str = "") -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith(skip or "\0")]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def save_torch(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_yaml(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(obj, sort_keys=False))


def save_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))
