"""Devices and multi-process (torchrun) helpers: one process group, averaged gradients, the main rank.

:func:`resolve_device` turns a config's ``device`` into the torch device this process uses (or
refuses it in one line); :func:`init_distributed` joins the torchrun process group on it (gloo on
CPU, nccl on CUDA). The search averages gradients by hand instead of wrapping the model in DDP: its
architecture step takes gradients with ``torch.autograd.grad`` (which DDP's reducer does not see)
and its weight step with ``backward(inputs=...)``; averaging both lists keeps every rank's weights
and logits identical, which is what DDP guarantees. :func:`all_reduce_weighted` weights each rank
by its batch size, so a short last batch counts for what it holds. Every tensor a collective here
creates lives on the process group's device (:func:`collective_device`: CUDA under nccl).

    torchrun --nproc_per_node=2 -m amqs.search.app debug=smoke   # gloo on CPU
    torchrun --nproc_per_node=2 -m amqs.search.app device=cuda   # nccl, rank r on cuda:r
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn


def _torchrun_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(name: str) -> torch.device:
    """The torch device that config ``device=name`` means for this process; refuses an absent one.

    ``cpu`` is always there. ``cuda`` needs a visible CUDA device (else a ``ValueError`` that names
    the fix); it means ``cuda:$LOCAL_RANK`` (one GPU per torchrun rank; ``cuda:0`` alone), an explicit
    ``cuda:i`` is honoured outside torchrun, and the device becomes the current one
    (``torch.cuda.set_device``) so NCCL and index-less CUDA calls land on it. Call it once, early, in
    every entry point, and move models and batches to what it returns.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name}: not a torch device name; use device=cpu or device=cuda") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"device={name}: amqs runs on cpu or cuda; use device=cpu or device=cuda")
    if not torch.cuda.is_available():
        raise ValueError(f"device={name}: no CUDA device is visible here (torch.cuda.is_available() is False); "
                         "use device=cpu")
    if _torchrun_world() > 1 and dev.index is not None:
        raise ValueError(f"device={name} under torchrun: use device=cuda (rank r then takes cuda:$LOCAL_RANK)")
    if dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={name}: cuda:{dev.index} is not visible here ({torch.cuda.device_count()} CUDA "
                         "device(s)); use fewer processes or check CUDA_VISIBLE_DEVICES")
    torch.cuda.set_device(dev)
    return dev


def init_distributed(device: str = "cpu") -> tuple[int, int]:
    """Resolve ``device`` and join the torchrun process group if there is one; returns (rank, world_size).

    The CUDA device is set before the group exists (nccl binds each rank to its current device).
    """
    dev = resolve_device(device)
    if _torchrun_world() == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def collective_device() -> torch.device:
    """Where the process group wants the tensors of its collectives: the current CUDA device under nccl, else CPU."""
    if world_size() > 1 and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(tensors: Iterable[torch.Tensor | None]) -> None:
    """Average tensors (e.g. buffers) across ranks in place, each rank weighing the same; no-op in one process."""
    n = world_size()
    if n == 1:
        return
    for t in tensors:
        if t is not None:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t.div_(n)


def all_reduce_weighted(tensors: Iterable[torch.Tensor | None], count: int,
                        device: torch.device | str | None = None) -> None:
    """Turn per-rank means over ``count`` examples into the mean over all ranks' examples, in place.

    Each rank scales its tensors (e.g. the gradients of its batch's mean loss) by its ``count``,
    they are summed across ranks and divided by the global count: a rank with a short last batch
    weighs what it holds. ``device`` holds the count's collective (default: :func:`collective_device`).
    A no-op in a single process.

    Example (rank 0 with 3 examples, rank 1 with 1: both end with ``(3 g0 + g1) / 4``)::

        all_reduce_weighted([w.grad for w in weights], count=len(batch["labels"]))
    """
    if world_size() == 1:
        return
    total = torch.tensor([count], dtype=torch.int64, device=device or collective_device())
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    n = int(total.item())
    for t in tensors:
        if t is not None:
            t.mul_(count)
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t.div_(n)


def average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (activation-range EMAs) so every rank holds the same model."""
    all_reduce_mean(b for b in model.buffers() if b.is_floating_point())


def same_on_all_ranks(value: int, device: torch.device | str | None = None) -> bool:
    """Whether every rank passed the same integer (a consistency check of replicated state).

    The gathered tensors live on ``device`` (default: :func:`collective_device`).
    """
    n = world_size()
    if n == 1:
        return True
    mine = torch.tensor([value], dtype=torch.int64, device=device or collective_device())
    seen = [torch.zeros_like(mine) for _ in range(n)]
    dist.all_gather(seen, mine)
    return all(int(t) == value for t in seen)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), indexed by rank; ``[obj]`` in a single process."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)  # nccl: through the current CUDA device, set by resolve_device
    return out
