"""Multi-process (torchrun) helpers: one process group, averaged gradients, the main rank.

The search averages gradients by hand instead of wrapping the model in DDP: its architecture step
takes gradients with ``torch.autograd.grad`` (which DDP's reducer does not see) and its weight
step with ``backward(inputs=...)``; averaging both lists keeps every rank's weights and logits
identical, which is what DDP guarantees.

    torchrun --nproc_per_node=2 -m amqs.search.app debug=smoke   # gloo on CPU, nccl on GPU
"""

from __future__ import annotations

import os
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn


def init_distributed(device: str = "cpu") -> tuple[int, int]:
    """Join the torchrun process group if there is one; returns (rank, world_size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def all_reduce_mean(tensors: Iterable[torch.Tensor | None]) -> None:
    """Average tensors (e.g. gradients) across ranks in place; a no-op in a single process."""
    n = world_size()
    if n == 1:
        return
    for t in tensors:
        if t is not None:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t.div_(n)


def average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (activation-range EMAs) so every rank holds the same model."""
    all_reduce_mean(b for b in model.buffers() if b.is_floating_point())


def same_on_all_ranks(value: int) -> bool:
    """Whether every rank passed the same integer (a consistency check of replicated state)."""
    n = world_size()
    if n == 1:
        return True
    mine = torch.tensor([value], dtype=torch.int64)
    seen = [torch.zeros_like(mine) for _ in range(n)]
    dist.all_gather(seen, mine)
    return all(int(t) == value for t in seen)
