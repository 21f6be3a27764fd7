"""Saving and loading weights and training state, atomically (see genlab.files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

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
    state = load_file(str(path), device=str(device) if device is not None else "cpu")
    module.load_state_dict(state)


def save_torch(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_yaml(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(obj, sort_keys=False))


def save_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))
