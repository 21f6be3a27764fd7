"""Several processes with PyTorch's own engine: `torchrun` sets the environment, DDP syncs gradients.

Nothing here is home-made distribution: process groups come from torch.distributed (gloo on CPU,
NCCL on CUDA), standard models are wrapped in DistributedDataParallel, and models that run their
own multi-optimizer step average their gradients with all_reduce before each optimizer step.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from genlab.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group `torchrun` describes (WORLD_SIZE > 1); a no-op for one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    initialized_here = False
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device != "cpu"
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        initialized_here = True
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, initialized_here=initialized_here)


def check_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device that this machine has, or a ConfigError naming what it has."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {device!r}: this machine has no CUDA GPU that torch can use; use --device cpu (or auto)")
        if resolved.index is not None and resolved.index >= count:
            raise ConfigError(f"device {device!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available on this machine; use --device cpu (or auto)")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device!r}: genlab trains on cpu, cuda or mps")
    return resolved


def resolve_device(preference: str, info: DistInfo) -> torch.device:
    """'auto' picks CUDA when present (one GPU per process under torchrun), else the CPU."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    check_device(preference)
    if preference == "cuda":
        return torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())
    return torch.device(preference)


def all_reduce_mean_(tensors: list[torch.Tensor], info: DistInfo) -> None:
    """Average tensors over processes in place (gradients of custom steps, logged loss sums)."""
    if not info.enabled:
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(info.world_size)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
