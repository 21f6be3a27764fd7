"""Weights as safetensors files: tensors only, so reading one runs no code (a run folder, or a
classifier file, is untrusted input). Every layer that keeps weights uses these two functions."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from genlab.errors import RunError
from genlab.files import atomic_path


def save_weights(module: nn.Module, path: str | Path, metadata: dict[str, str] | None = None,
                 state: Mapping[str, torch.Tensor] | None = None) -> None:
    """Write a module's state dict (or `state`, e.g. with adapters merged) as safetensors. Tied
    tensors are stored once per name (cloned)."""
    state = module.state_dict() if state is None else state
    state = {k: v.detach().contiguous().clone() if _shares_storage(v) else v.detach().contiguous() for k, v in state.items()}
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
        raise RunError(f"{path} is damaged or not a safetensors file ({first_line(exc)}); restore it from a copy of the run or retrain") from None
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise RunError(f"{path} holds weights of another model or shape than its config.yaml describes "
                       f"({first_line(exc, skip='Error(s) in loading')}); restore the run's files together or retrain") from None  # fmt: skip


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (what genlab stores beside its weights: a format
    tag, an architecture as JSON); a file that is not safetensors is a RunError naming it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise RunError(f"{path} is damaged or not a safetensors file ({first_line(exc)})") from None


def first_line(exc: BaseException, skip: str = "") -> str:
    """The first non-empty line of an exception's message (not starting with `skip`), at most 160 characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith(skip or "\0")]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
