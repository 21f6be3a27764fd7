"""Low-rank adapters (LoRA, Hu et al. 2022) on a model's linear and convolution layers.

A frozen layer with weight W gets a trainable low-rank update:

    y = W x + b + (alpha / r) B A x,    A: (r, in) [(r, in, k, k) for a convolution], B: (out, r) zero at start,

so training starts from the pretrained function exactly, and only r (in + out) numbers per layer
(times k^2 on A for a k x k convolution) are trained. After training the update merges into the
weight, W' = W + (alpha / r) B A (for a convolution W'[o, i] = W[o, i] + (alpha / r) sum_j B[o, j] A[j, i]),
so a run saves the plain architecture and `genlab.load` reads it as any other.

Adapted: every module of type exactly `nn.Linear` or `nn.Conv2d` with groups=1; subclasses
(MADE's masked layers, whose masks an update would break), parametrised layers (spectral norm)
and transposed convolutions keep their weights frozen. Written here rather than with the `peft`
library: peft pulls in transformers and accelerate for what is two small matrices per layer, and
its adapted models would still need merging into genlab's own weights format.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import Tensor, nn

__all__ = ["LoRA", "add_lora", "lora_layers", "merge_lora_", "plain_state_dict"]


class LoRA(nn.Module):
    """base(x) + (alpha / rank) * up(down(x)) around a frozen nn.Linear or nn.Conv2d `base`.

    down: Linear(in, r) or Conv2d(in, r) with base's kernel, stride, padding and dilation
    (Kaiming-uniform start, as nn.Linear's); up: Linear(r, out) or a 1x1 Conv2d(r, out), zero at start.
    """

    def __init__(self, base: nn.Linear | nn.Conv2d, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.rank, self.scale = rank, alpha / rank
        if isinstance(base, nn.Linear):
            self.down = nn.Linear(base.in_features, rank, bias=False)
            self.up = nn.Linear(rank, base.out_features, bias=False)
        else:
            self.down = nn.Conv2d(base.in_channels, rank, base.kernel_size, stride=base.stride, padding=base.padding,
                                  dilation=base.dilation, padding_mode=base.padding_mode, bias=False)
            self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        self.to(device=base.weight.device, dtype=base.weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scale * self.up(self.down(x))

    def delta(self) -> Tensor:
        """(alpha / r) B A in the base weight's shape."""
        up = self.up.weight.reshape(self.up.weight.shape[0], self.rank)
        down = self.down.weight.reshape(self.rank, -1)
        return (self.scale * up @ down).reshape(self.base.weight.shape)


def _adaptable(module: nn.Module) -> bool:
    return type(module) is nn.Linear or (type(module) is nn.Conv2d and module.groups == 1)


def add_lora(model: nn.Module, rank: int, alpha: float | None = None) -> int:
    """Freeze every parameter of `model` and wrap each adaptable layer in a `LoRA` of this rank (in
    place; alpha None: alpha = rank, a scale of 1). Returns the number of adapted layers."""
    alpha = float(rank) if alpha is None else float(alpha)
    model.requires_grad_(False)
    targets = [(name, module) for name, module in model.named_modules() if _adaptable(module)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRA(module, rank, alpha))
    return len(targets)


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRA]]:
    return ((name, m) for name, m in model.named_modules() if isinstance(m, LoRA))


@torch.no_grad()
def plain_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """model.state_dict() with every LoRA merged: `name.weight` = W + (alpha / r) B A, `name.bias`,
    and no adapter keys: the state dict of the model without adapters."""
    state = model.state_dict()
    for name, layer in lora_layers(model):
        prefix = f"{name}."
        for key in [k for k in state if k.startswith(prefix)]:
            del state[key]
        state[f"{prefix}weight"] = layer.base.weight + layer.delta().to(layer.base.weight.dtype)
        if layer.base.bias is not None:
            state[f"{prefix}bias"] = layer.base.bias
    return state


@torch.no_grad()
def merge_lora_(model: nn.Module) -> nn.Module:
    """Replace every LoRA of `model` by its base layer with the update merged (in place), trainable
    again; returns the model."""
    for name, layer in list(lora_layers(model)):
        base = layer.base
        base.weight.add_(layer.delta().to(base.weight.dtype))
        base.requires_grad_(True)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, base)
    return model
