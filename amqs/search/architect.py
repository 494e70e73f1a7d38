"""The architecture step of the bilevel search (DARTS's ``architect.py``, for AQ-BERT's supernet).

Weights ``w`` are trained on train batches (AdamW, :func:`weight_optimizer`); architecture logits
``b`` on search-validation batches (SGD or Adam, :class:`Architect`). The two optimizers hold
disjoint parameters and every backward pass names its inputs, so ``b`` only ever receives
gradients of the search-validation loss and ``w`` only of the train loss.

* first order: ``grad_b L_val(w, b)`` at the current weights;
* unrolled (DARTS 2nd order): ``grad_b L_val(w', b) - xi * (grad_b L_train(w+, b) - grad_b L_train(w-, b)) / 2r``
  with ``w' = w - xi grad_w L_train(w, b)``, ``w+- = w +- r grad_w' L_val(w', b)`` and
  ``r = 0.01 / ||grad_w' L_val||``. Weights are restored exactly afterwards; ``w+`` and ``w-`` see
  the same dropout masks (one RNG state), so their difference is not dropout noise.

The architecture step never changes activation-range statistics (they belong to the weights and
are restored after its forward passes).

Example (one search step; what a training loop calls)::

    wopt = weight_optimizer(model, lr=5e-5)
    architect = Architect(model, val_loss=SearchObjective(V), train_loss=ce_loss, cfg=ArchitectConfig())
    for step, (train_batch, val_batch) in enumerate(zip(train_loader, val_loader)):
        stats = search_step(model, architect, wopt, train_batch, val_batch, step=step,
                            tau=schedule(step / steps_per_epoch), steps_per_epoch=steps_per_epoch)
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from amqs.quant.modules import ActQuant
from amqs.search.supernet import arch_parameters, resample, set_relaxation, shared_candidates, weight_parameters
from amqs.train.loop import make_optimizer
from amqs.train.losses import LossFn, ce_loss


@dataclass
class ArchitectConfig:
    """Optimisation of the architecture logits."""

    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.1
    momentum: float = 0.0  # sgd only
    adam_beta1: float = 0.5  # DARTS's Adam betas (0.5, 0.999)
    adam_beta2: float = 0.999
    weight_decay: float = 0.0  # on the logits (DARTS: 1e-3)
    unrolled: bool = False  # False: first order; True: DARTS's one-step unrolled approximation
    xi: float | None = None  # virtual weight step of the unrolled variant; None: the weight lr
    warmup_steps: int = 0  # N1 in steps: no architecture update before this global step ...
    warmup_epochs: float = 0.0  # ... nor before this many epochs (needs steps_per_epoch)
    # An architecture update on every k-th step from the end of the warm-up on (1: every step, DARTS/AQ-BERT);
    # the weights train on every step. FBNet trains the architecture on 20% of the data, the weights on 80%.
    every: int = 1
    grad_clip: float | None = None  # max grad norm of the logits; None: no clipping


def weight_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.01, fused: bool = False) -> torch.optim.AdamW:
    """AdamW over the weight parameters only (decay on matrices, none on biases/LayerNorms; not the logits).

    Example:
        >>> opt = weight_optimizer(nn.Linear(2, 2), lr=1e-3)
        >>> [len(g["params"]) for g in opt.param_groups]
        [1, 1]
    """
    return make_optimizer(model, lr, weight_decay, fused=fused, params=weight_parameters(model))


def _arch_optimizer(params: list[nn.Parameter], cfg: ArchitectConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                weight_decay=cfg.weight_decay)
    raise ValueError(f"architect optimizer must be 'sgd' or 'adam', got {cfg.optimizer!r}")


@contextmanager
def _frozen_act_stats(model: nn.Module) -> Iterator[None]:
    """Restore every ActQuant's running range afterwards (they are trained by train batches only)."""
    saved = [(m, {k: v.clone() for k, v in m.state_dict().items()}) for m in model.modules() if isinstance(m, ActQuant)]
    try:
        yield
    finally:
        for m, state in saved:
            m.load_state_dict(state)


def _rng_replayer() -> Callable[[], None]:
    """Snapshot the RNG; calling the result rewinds to it (same dropout masks again)."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    def replay() -> None:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

    return replay


def _grads(loss: Tensor, params: list[nn.Parameter]) -> list[Tensor]:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


class Architect:
    """Updates the architecture logits of ``model`` from search-validation batches.

    ``val_loss(model, batch)`` is the architecture objective (e.g. :class:`SearchObjective`);
    ``train_loss`` is the weights' loss, needed by the unrolled variant.

    Example:
        >>> arch = Architect(model, SearchObjective(V))    # doctest: +SKIP
        >>> val = arch.step(val_batch)                     # doctest: +SKIP
    """

    def __init__(
        self, model: nn.Module, val_loss: LossFn, train_loss: LossFn = ce_loss, cfg: ArchitectConfig | None = None
    ) -> None:
        self.model, self.val_loss, self.train_loss = model, val_loss, train_loss
        self.cfg = cfg or ArchitectConfig()
        if self.cfg.every < 1:
            raise ValueError(f"search.arch.every must be >= 1, got {self.cfg.every}")
        self.arch = arch_parameters(model)
        if not self.arch:
            raise ValueError(f"{type(model).__name__} has no architecture parameters; call build_supernet first")
        self.weights = weight_parameters(model)
        self.optimizer = _arch_optimizer(self.arch, self.cfg)
        # Called with the architecture gradients before the update (multi-process: average them across
        # ranks, weighted by batch size: amqs.utils.dist.all_reduce_weighted).
        self.grad_hook: Callable[[list[Tensor]], None] | None = None

    def active(self, step: int, steps_per_epoch: int | None = None) -> bool:
        """Whether the architecture moves at global ``step``: past the warm-up (N1), on every ``cfg.every``-th step.

        A function of the step alone, so a resumed search updates the architecture on the same steps.
        """
        start = self.cfg.warmup_steps
        if self.cfg.warmup_epochs:
            if not steps_per_epoch:
                raise ValueError("warmup_epochs needs steps_per_epoch")
            start = max(start, math.ceil(self.cfg.warmup_epochs * steps_per_epoch))
        return step >= start and (step - start) % self.cfg.every == 0

    def step(self, val_batch: Any, train_batch: Any = None, xi: float | None = None) -> float:
        """One architecture update; returns the search-validation loss (at ``w`` or ``w'``).

        The unrolled variant's virtual step is ``cfg.xi``, or ``xi`` (normally the current weight
        lr, as in DARTS) when ``cfg.xi`` is None.
        """
        with _frozen_act_stats(self.model):
            if self.cfg.unrolled:
                xi = self.cfg.xi if self.cfg.xi is not None else xi
                if train_batch is None or xi is None:
                    raise ValueError("the unrolled step needs a train batch and xi (cfg.xi or the weight lr)")
                grads, loss = self._unrolled_grads(val_batch, train_batch, xi)
            else:
                loss = self.val_loss(self.model, val_batch)
                grads = _grads(loss, self.arch)
        if self.grad_hook is not None:
            self.grad_hook(grads)
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.arch, grads):
            p.grad = g.to(p.dtype)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.arch, self.cfg.grad_clip)
        self.optimizer.step()
        return float(loss.detach())

    def _unrolled_grads(self, val_batch: Any, train_batch: Any, xi: float) -> tuple[list[Tensor], Tensor]:
        weights, na = self.weights, len(self.arch)
        backup = [w.detach().clone() for w in weights]
        try:
            # w' = w - xi * grad_w L_train(w, b): a plain SGD virtual step, as in the formula.
            gw = _grads(self.train_loss(self.model, train_batch), weights)
            with torch.no_grad():
                for w, g in zip(weights, gw):
                    w.add_(g, alpha=-xi)
            loss = self.val_loss(self.model, val_batch)
            g = _grads(loss, self.arch + weights)
            d_arch, d_w = g[:na], g[na:]
            r = 0.01 / torch.sqrt(sum((d * d).sum() for d in d_w)).clamp_min(1e-12).item()
            replay = _rng_replayer()
            hessian = []
            for sign in (1.0, -1.0):  # w+- = w +- r * grad_w' L_val(w', b), around the ORIGINAL w
                with torch.no_grad():
                    for w, b, d in zip(weights, backup, d_w):
                        w.copy_(b).add_(d, alpha=sign * r)
                replay()
                hessian.append(_grads(self.train_loss(self.model, train_batch), self.arch))
            grads = [da - xi * (hp - hn) / (2 * r) for da, hp, hn in zip(d_arch, *hessian)]
        finally:
            with torch.no_grad():
                for w, b in zip(weights, backup):
                    w.copy_(b)
        return grads, loss

    def state_dict(self) -> dict[str, Any]:
        """The architecture optimizer's state (the logits themselves are in ``model.state_dict()``)."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def search_step(
    model: nn.Module,
    architect: Architect,
    weight_opt: torch.optim.Optimizer,
    train_batch: Any,
    val_batch: Any,
    *,
    step: int,
    train_loss: LossFn = ce_loss,
    tau: float | None = None,
    steps_per_epoch: int | None = None,
    max_grad_norm: float | None = 1.0,
    scheduler: Any = None,
    generator: torch.Generator | None = None,
    grad_hook: Callable[[list[Tensor | None]], None] | None = None,
) -> dict[str, float]:
    """One bilevel step: set ``tau``, resample the Gumbel noise, arch step (after warm-up, every
    ``cfg.every``-th step), weight step.

    The architecture step comes first (DARTS order); both steps see the same noise sample and share the
    quantized candidates (:func:`~amqs.search.supernet.shared_candidates`; recomputed after the unrolled
    variant's virtual weight steps).
    ``grad_hook`` sees the weight gradients before clipping (multi-process: average them across ranks,
    weighted by batch size; the architect's own ``grad_hook`` does the same for the logits).
    Returns ``{"train_loss", "val_loss" (only when the architecture moved)}``.

    Example:
        >>> stats = search_step(model, architect, wopt, tb, vb, step=0)  # doctest: +SKIP
    """
    if tau is not None:
        set_relaxation(model, tau=tau)
    resample(model, generator)
    stats: dict[str, float] = {}
    weights = architect.weights
    with shared_candidates(model):  # both steps see the same weights: quantize the candidates once
        if val_batch is not None and architect.active(step, steps_per_epoch):
            stats["val_loss"] = architect.step(val_batch, train_batch, xi=weight_opt.param_groups[0]["lr"])
        weight_opt.zero_grad(set_to_none=True)
        loss = train_loss(model, train_batch)
    loss.backward(inputs=weights)  # the logits get no gradient from the train loss
    if grad_hook is not None:
        grad_hook([w.grad for w in weights])
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(weights, max_grad_norm)
    weight_opt.step()
    if scheduler is not None:
        scheduler.step()
    stats["train_loss"] = float(loss.detach())
    return stats


__all__ = ["Architect", "ArchitectConfig", "arch_parameters", "search_step", "weight_optimizer", "weight_parameters"]
