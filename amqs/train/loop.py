"""One resumable training loop for every run: teacher fine-tuning, QAT, retraining.

AdamW (no decay on biases and LayerNorms), linear warm-up then linear decay, gradient clipping,
a progress bar, a JSON-lines log, and a checkpoint every ``checkpoint_every`` steps holding the
model, optimizer, scheduler, RNG states and the position in the epoch — a killed run started
again with the same checkpoint folder continues from there and ends with the same weights it
would have had.

Example::

    result = fit(model, loader, TrainConfig(epochs=1, lr=5e-5), ckpt_dir=out / "checkpoint")
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from amqs.config import TrainConfig

log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
STATE_FILE = "state.pt"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint is kept untouched."""


class ResumableSampler(Sampler[int]):
    """A seeded random permutation per epoch that can start part-way through an epoch.

    With ``world_size > 1`` each rank takes every ``world_size``-th index of the same permutation
    (its shard), so ranks see disjoint data; like ``torch.utils.data.DistributedSampler`` the
    permutation is first padded with its own first indices to a multiple of ``world_size``, so every
    shard has ``ceil(n / world_size)`` indices and every rank runs the same number of batches (a
    single process is never padded). ``skip`` counts within the shard.

    Example:
        >>> [list(ResumableSampler(5, seed=0, rank=r, world_size=2)) for r in (0, 1)]
        [[4, 1, 2], [0, 3, 4]]
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        pad = self._shard_size() * self.world_size - self.n
        if pad and self.n:  # DistributedSampler's padding (repeated if the data is smaller than the pad)
            perm = torch.cat([perm, perm.repeat(math.ceil(pad / self.n))[:pad]])
        return iter(perm[self.rank :: self.world_size][self.skip :].tolist())

    def _shard_size(self) -> int:
        return math.ceil(self.n / self.world_size)

    def __len__(self) -> int:
        return self._shard_size() - self.skip


@dataclass
class FitResult:
    steps: int
    train_examples: int  # examples seen (steps x batch), counting repeats over epochs
    seconds: float
    final_loss: float
    resumed_from_step: int


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with decay on weight matrices only (the BERT convention)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def _save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill during the write leaves the old checkpoint intact


def fit(
    model: nn.Module,
    loader: DataLoader,
    cfg: TrainConfig,
    *,
    loss_fn: LossFn = default_loss,
    ckpt_dir: Optional[Path] = None,
    log_file: Optional[Path] = None,
    device: str = "cpu",
    desc: str = "train",
) -> FitResult:
    """Train ``model`` for ``cfg.epochs`` (fractions allowed) over ``loader``; resume from ``ckpt_dir``."""
    steps_per_epoch = len(loader)
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    step, seconds_before = 0, 0.0
    state_path = ckpt_dir / STATE_FILE if ckpt_dir else None
    if state_path and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        if state["total_steps"] != total_steps:
            raise RuntimeError(
                f"checkpoint {state_path} was made for {state['total_steps']} steps, this run has "
                f"{total_steps}: the config changed; delete the checkpoint folder to start over"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        step, seconds_before = state["step"], state.get("seconds", 0.0)
        log.info("resumed from %s at step %d/%d", state_path, step, total_steps)
    resumed_from = step
    model.to(device).train()
    sampler = loader.sampler if isinstance(loader.sampler, ResumableSampler) else None
    t0 = time.perf_counter()
    loss_value = float("nan")
    logf = open(log_file, "a") if log_file else None
    bar = tqdm(total=total_steps, initial=step, desc=desc, disable=not cfg.progress, dynamic_ncols=True)
    try:
        while step < total_steps:
            epoch, in_epoch = divmod(step, steps_per_epoch)
            if sampler is not None:
                sampler.set_epoch(epoch, skip=in_epoch * loader.batch_size)
            elif in_epoch:
                raise RuntimeError("resuming mid-epoch needs a loader built with make_loader(shuffle=True)")
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                loss = loss_fn(model, batch)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"loss is {loss.item()} at step {step + 1}/{total_steps}; the last checkpoint "
                        f"({state_path or 'none'}) is kept. Lower train.lr or check the data."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                loss_value = loss.item()
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if logf and (step % cfg.log_every == 0 or step == total_steps):
                    logf.write(json.dumps({"step": step, "epoch": step / steps_per_epoch, "loss": loss_value,
                                           "lr": scheduler.get_last_lr()[0]}) + "\n")
                    logf.flush()
                if state_path and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps:
                    _save_state(state_path, {
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                        "step": step, "total_steps": total_steps,
                        "seconds": seconds_before + time.perf_counter() - t0,
                    })
                if step >= total_steps:
                    break
    finally:
        bar.close()
        if logf:
            logf.close()
    return FitResult(
        steps=total_steps,
        train_examples=min(total_steps * loader.batch_size, math.ceil(cfg.epochs * len(loader.dataset))),
        seconds=seconds_before + time.perf_counter() - t0,
        final_loss=loss_value,
        resumed_from_step=resumed_from,
    )
