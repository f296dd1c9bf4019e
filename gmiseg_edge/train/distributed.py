"""Single-process or ``torchrun`` multi-process training: process group, device, deterministic data sharding.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the process group is initialised with NCCL on
GPUs and gloo on the CPU. Rank 0 alone writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False  # this process initialised the process group (and must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but PyTorch sees no CUDA GPU")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device("cpu")


def setup(device: str = "auto") -> DistContext:
    """The process context; initialises the process group under ``torchrun`` if nobody has yet."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, local_rank)
    if world_size <= 1:
        return DistContext(rank=0, world_size=1, device=dev)
    owns = False
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), device=dev, owns_group=owns)


def teardown(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(ctx: DistContext, values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over all processes (float64)."""
    if not ctx.distributed:
        return list(values)
    device = ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.cpu()]


def epoch_order(n: int, seed: int, epoch: int, world_size: int = 1) -> np.ndarray:
    """The order samples are visited in an epoch: a permutation seeded by (seed, epoch), padded by repeating
    its start to a multiple of ``world_size`` (as PyTorch's DistributedSampler)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    total = -(-n // world_size) * world_size
    return np.resize(order, total)


def shard(n_positions: int, rank: int, world_size: int) -> list[int]:
    """Positions ``rank, rank + world_size, ...`` of ``n_positions``: this process's share."""
    return list(range(rank, n_positions, world_size))
