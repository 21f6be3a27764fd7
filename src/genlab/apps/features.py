"""Features for other tasks: the codes an encoder model gives a dataset (`genlab encode`).

An encoder model (AE, DAE, VAE family, WAE, AAE, VQ-VAE, dVAE) maps x to a code z = f(x): the
posterior mean for a VAE, the encoder's output for an autoencoder, the pre-quantisation grid z_e(x)
(B, D, h, w) for a VQ-VAE, whose code indices argmin_k |z_e - e_k| (B, h, w) come too
(`encode_latent`'s rule, shared with the latent tools). The codes feed a classifier, a regression
or a clustering (e.g. a linear probe: `benchmarks/features.py`).

    >>> from genlab.apps import encode, write_codes                            # doctest: +SKIP
    >>> codes = encode("runs/vae-mnist", "mnist", data_options={"root": "data"})  # doctest: +SKIP
    >>> codes.codes.shape, codes.labels.shape                                   # doctest: +SKIP
    ((70000, 8), (70000,))
    >>> write_codes(codes, "latents.npz")         # numpy.load(..., allow_pickle=False) reads it  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genlab import registry
from genlab.apps.latent import _check_encoder_model, encode_latent
from genlab.apps.reading import read_samples
from genlab.data.dataset import Dataset
from genlab.errors import ArgumentTypeError, ConfigError
from genlab.files import atomic_path
from genlab.models.base import GenerativeModel

__all__ = ["Codes", "encode", "write_codes"]

_CHUNK = 512


@dataclasses.dataclass(frozen=True)
class Codes:
    """codes (N, *latent shape) float32; indices (N, *grid) int64 for a model with discrete codes
    (`encode_indices`: VQ-VAE, dVAE), else None; labels, class_names, split and names as
    `genlab.apps.reading.RunSamples` (None where the data has none)."""

    codes: Tensor
    indices: Tensor | None
    labels: np.ndarray | None
    class_names: tuple[str, ...] | None
    split: np.ndarray | None
    names: list[str]
    model: str


@torch.no_grad()
def _indices(model: GenerativeModel, x: Tensor) -> Tensor | None:
    encode_indices = getattr(model, "encode_indices", None)
    if not callable(encode_indices):
        return None
    was_training = model.training
    model.eval()
    try:
        return torch.cat([encode_indices(chunk.to(model.device)).cpu() for chunk in x.split(_CHUNK)])
    finally:
        model.train(was_training)


def encode(run_or_model: str | os.PathLike | GenerativeModel, data: str | os.PathLike | Tensor | Dataset, *,
           data_options: dict[str, Any] | None = None, label_column: str | None = None, device: str | None = None) -> Codes:
    """The codes of every sample of `data`, in its order.

    run_or_model: a run directory (the data is then read as the run reads it: a table through its
        encoder, images with its resize, crop and grey levels) or a trained encoder model.
    data: a dataset name or path (`genlab.data.load`'s, with data_options), a genlab Dataset, or
        samples (N, *shape).
    label_column: for a table, the column whose values become the labels.
    """
    if isinstance(run_or_model, GenerativeModel):
        model, run_dir = run_or_model, None
    elif isinstance(run_or_model, (str, os.PathLike)):
        run_dir = Path(run_or_model)
        model = registry.load(run_dir, device=device)
    else:
        raise ArgumentTypeError(f"encode needs a run directory or a trained genlab model, not {type(run_or_model).__name__}")
    _check_encoder_model(model)
    labels = class_names = split = None
    if isinstance(data, Tensor):
        x, names = data, [str(i) for i in range(len(data))]
    elif isinstance(data, Dataset):
        x, y = data.tensors()
        names = [str(i) for i in range(len(x))]
        labels, class_names = (None if y is None else y.numpy()), data.spec.class_names
    elif run_dir is not None:
        read = read_samples(run_dir, data, model, data_options, label_column=label_column)
        x, names, labels, class_names, split = read.x, read.names, read.labels, read.class_names, read.split
    else:
        from genlab.data.catalog import load

        dataset = load(data, **(data_options or {}))
        return encode(model, dataset)
    if tuple(x.shape[1:]) != tuple(model.spec.shape):
        raise ConfigError(f"samples of shape {tuple(x.shape[1:])}, and the model was trained on {tuple(model.spec.shape)} "
                          f"({model.spec.name!r}); load the data as the model's run did")
    codes = encode_latent(model, x).float().cpu()
    return Codes(codes, _indices(model, x), labels, class_names, split, names, model.name)


def write_codes(codes: Codes, out: str | os.PathLike) -> Path:
    """Write an .npz (atomically) that numpy.load reads without pickle: `codes`, `names`, and where
    there are some `indices`, `labels`, `class_names`, `split`; `model` names the encoder."""
    out = Path(out)
    if out.suffix.lower() != ".npz":
        raise ConfigError(f"--out {out}: codes are written as a NumPy .npz archive; name it e.g. latents.npz")
    arrays: dict[str, np.ndarray] = {"codes": codes.codes.numpy(), "names": np.asarray(codes.names, dtype=str),
                                     "model": np.asarray(codes.model)}
    if codes.indices is not None:
        arrays["indices"] = codes.indices.numpy()
    if codes.labels is not None:
        arrays["labels"] = np.asarray(codes.labels)
    if codes.class_names is not None:
        arrays["class_names"] = np.asarray(codes.class_names, dtype=str)
    if codes.split is not None:
        arrays["split"] = codes.split
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as handle:  # a file object: np.savez would append .npz to a temporary name
            np.savez(handle, **arrays)
    return out
