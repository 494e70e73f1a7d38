"""Reconstruction start (``train.init=lkd``): fit the quantized student to the teacher block by block before QAT.

Round-to-nearest (``train.init=rtn``, the default) leaves a low-bit student near chance; layer-wise
knowledge distillation (ZeroQuant's LKD, BRECQ's block reconstruction) brings it back near the
teacher with a few hundred small steps. For each Transformer block ``k`` in order:

* the teacher's block output ``Y_k = T_k(X_k)`` on the teacher's own input ``X_k`` is the target;
* the student's block sees the *student's* input ``X^_k`` (the output of its already reconstructed,
  quantized blocks, so each block also compensates the error that reaches it: BRECQ, QDrop);
* every trainable tensor of the block (latent weights through the straight-through estimator, biases,
  LayerNorms, LSQ steps; never architecture logits) is tuned by AdamW to minimise the mean squared
  error over real (unpadded) tokens, ``cfg.epochs`` passes over ``cfg.batches`` calibration batches
  of the train split; activation ranges are calibrated on the same batches; dropout is off;
* then ``X^_{k+1} = S_k(X^_k)`` in eval mode (the frozen ranges the final model uses).

With ``cfg.head`` the parts after the blocks (pooler and classifier) are last fitted to the teacher's
logits (KL divergence) on the student's final hidden states. Forward passes run under ``precision``
(``amqs.train.precision``); the fitted tensors and their optimizer stay fp32. Any model whose
Transformer blocks are the longest ``nn.ModuleList`` works (BERT, a supernet of it): the blocks are
called with the arguments the model itself passes them.

Example::

    stats = reconstruct(student, teacher, calibration_batches(train_loader, 64), ReconstructConfig())
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amqs.train.loop import NonFiniteLossError
from amqs.train.precision import autocast

log = logging.getLogger(__name__)

INITS = ("rtn", "lkd")


@dataclass
class ReconstructConfig:
    """How the ``lkd`` start fits each block (``train.reconstruct`` in the config)."""

    batches: int = 32  # calibration batches from the train split (train.batch_size examples each)
    epochs: float = 2.0  # passes over them per block
    lr: float = 1.0e-3  # AdamW, linear decay to 0 within each block, no weight decay
    head: bool = True  # then fit the pooler/classifier to the teacher's logits
    max_grad_norm: float = 1.0


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the blocks' input is captured."""


def transformer_blocks(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """The model's Transformer blocks: its longest ``nn.ModuleList``, with its parent and attribute name.

    Example:
        >>> m = nn.Sequential(nn.ModuleList([nn.Linear(2, 2)] * 3))
        >>> transformer_blocks(m)[1:]
        ('0', ModuleList(
          (0-2): 3 x Linear(in_features=2, out_features=2, bias=True)
        ))
    """
    found = [(len(m), parent, attr, m) for parent in model.modules() for attr, m in parent.named_children()
             if isinstance(m, nn.ModuleList)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no nn.ModuleList of Transformer blocks to reconstruct")
    _, parent, attr, blocks = max(found, key=lambda t: t[0])
    return parent, attr, blocks


def calibration_batches(loader: Iterable[dict[str, Tensor]], n: int, device: str | torch.device = "cpu"
                        ) -> list[dict[str, Tensor]]:
    """The first ``n`` batches of ``loader`` on ``device`` (fewer if it has fewer)."""
    out = []
    for batch in loader:
        if len(out) == n:
            break
        out.append({k: v.to(device) for k, v in batch.items()})
    return out


@torch.no_grad()
def block_inputs(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, tuple, dict[str, Any]]:
    """What the model passes its first block on ``batch``: ``(hidden_states, other args, kwargs)``."""
    _, _, blocks = transformer_blocks(model)
    seen: dict[str, Any] = {}

    def grab(module, args, kwargs):
        seen.update(args=args, kwargs=kwargs)
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(**{k: v for k, v in batch.items() if k != "labels"})
    except _Stop:
        pass
    finally:
        handle.remove()
    args = seen["args"]
    if args:
        return args[0], tuple(args[1:]), dict(seen["kwargs"])
    kwargs = dict(seen["kwargs"])
    return kwargs.pop("hidden_states"), (), kwargs


def run_block(block: nn.Module, hidden: Tensor, rest: tuple, kwargs: dict[str, Any]) -> Tensor:
    """One block's output hidden states (blocks may return a tensor or a tuple led by it)."""
    out = block(hidden, *rest, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


@contextlib.contextmanager
def _calibrating(module: nn.Module) -> Iterator[None]:
    """Train mode (activation ranges observe) with every dropout off; the previous modes come back after."""
    modes = {m: m.training for m in module.modules()}
    module.train()
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.train(mode)


def _masked_mse(out: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the unpadded tokens (``mask`` ``[B, L]``), averaged over features."""
    err = (out.float() - target.float()).pow(2).mean(-1)
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp_min(1.0)


def _trainable(module: nn.Module, exclude: set[int]) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad and id(p) not in exclude]


def _fit(params: list[nn.Parameter], loss_of: Any, n: int, cfg: ReconstructConfig) -> tuple[float, float]:
    """AdamW on ``params`` over ``epochs * n`` steps of ``loss_of(i)`` (batch ``i``); first and last epoch losses."""
    steps = max(1, math.ceil(cfg.epochs * n))
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / steps)
    losses = []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_of(step % n)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"reconstruction loss {loss.item()} at step {step + 1}/{steps}; lower "
                                     "train.reconstruct.lr")
        loss.backward()
        if cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(loss.item())
    first, last = losses[: min(n, steps)], losses[-min(n, steps):]
    return sum(first) / len(first), sum(last) / len(last)


class _Replay(nn.Module):
    """Stands in for the blocks: returns fixed hidden states (shaped as the real blocks return them)."""

    def __init__(self, hidden: Tensor, as_tuple: bool) -> None:
        super().__init__()
        self.hidden, self.as_tuple = hidden, as_tuple

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return (self.hidden,) if self.as_tuple else self.hidden


@contextlib.contextmanager
def _blocks_replaced(model: nn.Module, hidden: Tensor, as_tuple: bool) -> Iterator[None]:
    """Run ``model`` as if its blocks had produced ``hidden`` (the parts after them see it)."""
    parent, attr, blocks = transformer_blocks(model)
    setattr(parent, attr, nn.ModuleList([_Replay(hidden, as_tuple)]))
    try:
        yield
    finally:
        setattr(parent, attr, blocks)


def _fit_block(sb: nn.Module, tb: nn.Module, xs: list, xt: list, masks: list[Tensor], cfg: ReconstructConfig,
               precision: str, exclude: set[int]) -> tuple[list, list, dict[str, float]]:
    """Fit one student block to its teacher block; return the next blocks' student and teacher inputs."""
    device = masks[0].device
    with torch.no_grad(), autocast(precision, device):
        targets = [run_block(tb, h, r, kw).float() for h, r, kw in xt]

    def loss_of(i: int) -> Tensor:
        h, r, kw = xs[i]
        with autocast(precision, device):
            out = run_block(sb, h, r, kw)
        return _masked_mse(out, targets[i], masks[i])

    with torch.no_grad():
        before = sum(loss_of(i).item() for i in range(len(xs))) / len(xs)  # eval-mode error of the RTN block
    with _calibrating(sb):
        first, last = _fit(_trainable(sb, exclude), loss_of, len(xs), cfg)
    with torch.no_grad(), autocast(precision, device):
        nxt = [(run_block(sb, h, r, kw).float(), r, kw) for h, r, kw in xs]
    after = sum(_masked_mse(o, t, m).item() for (o, _, _), t, m in zip(nxt, targets, masks)) / len(xs)
    return nxt, [(t, r, kw) for t, (_, r, kw) in zip(targets, xt)], {"mse_rtn": before, "mse_after": after,
                                                                    "mse_first_epoch": first, "mse_last_epoch": last}


def _fit_head(student: nn.Module, teacher: nn.Module, batches: list[dict[str, Tensor]], xs: list,
              cfg: ReconstructConfig, precision: str, exclude: set[int]) -> dict[str, float]:
    """Fit what follows the blocks (pooler, classifier) to the teacher's logits on the student's hidden states."""
    device = batches[0]["input_ids"].device
    inputs = [{k: v for k, v in b.items() if k != "labels"} for b in batches]
    with torch.no_grad(), autocast(precision, device):
        t_logits = [teacher(**x).logits.float() for x in inputs]
    _, _, blocks = transformer_blocks(student)
    with torch.no_grad():  # what the blocks return, for the stand-in (one forward, no graph)
        as_tuple = isinstance(blocks[-1](xs[0][0], *xs[0][1], **xs[0][2]), (tuple, list))
    in_blocks = {id(p) for p in blocks.parameters()}
    params = [p for p in _trainable(student, exclude) if id(p) not in in_blocks]

    def loss_of(i: int) -> Tensor:
        with _blocks_replaced(student, xs[i][0], as_tuple), autocast(precision, device):
            logits = student(**inputs[i]).logits.float()
        return F.kl_div(F.log_softmax(logits, -1), F.log_softmax(t_logits[i], -1), log_target=True,
                        reduction="batchmean")

    with _calibrating(student):
        first, last = _fit(params, loss_of, len(xs), cfg)
    return {"kl_first_epoch": first, "kl_last_epoch": last}


def reconstruct(student: nn.Module, teacher: nn.Module, batches: list[dict[str, Tensor]], cfg: ReconstructConfig,
                precision: str = "fp32", exclude: Iterable[nn.Parameter] = ()) -> dict[str, Any]:
    """Fit ``student`` (quantized, or a supernet) to ``teacher`` block by block, in place (module docstring).

    ``exclude``: parameters left as they are (a supernet's architecture logits). Returns per-block errors
    (``mse_rtn`` before, ``mse_after`` after, both in eval mode) and the time taken.
    """
    if not batches:
        raise ValueError("reconstruction needs at least one calibration batch (train.reconstruct.batches >= 1)")
    t0, was_training = time.perf_counter(), student.training
    teacher.eval()
    student.eval()
    (_, _, s_blocks), (_, _, t_blocks) = transformer_blocks(student), transformer_blocks(teacher)
    if len(s_blocks) != len(t_blocks):
        raise ValueError(f"the student has {len(s_blocks)} blocks and the teacher {len(t_blocks)}: not the same model")
    device = batches[0]["input_ids"].device
    excl = {id(p) for p in exclude}
    with autocast(precision, device):
        xs = [_float_hidden(block_inputs(student, b)) for b in batches]
        xt = [_float_hidden(block_inputs(teacher, b)) for b in batches]
    masks = [b["attention_mask"] for b in batches]
    blocks = []
    for k, (sb, tb) in enumerate(zip(s_blocks, t_blocks)):
        xs, xt, stats = _fit_block(sb, tb, xs, xt, masks, cfg, precision, excl)
        blocks.append(stats)
        log.info("reconstructed block %d/%d: mse %.4g (rtn) -> %.4g", k + 1, len(s_blocks), stats["mse_rtn"],
                 stats["mse_after"])
    head = _fit_head(student, teacher, batches, xs, cfg, precision, excl) if cfg.head else {}
    student.train(was_training)
    return {"blocks": blocks, "head": head, "seconds": round(time.perf_counter() - t0, 1),
            "examples": sum(len(b["input_ids"]) for b in batches)}


def _float_hidden(inputs: tuple[Tensor, tuple, dict[str, Any]]) -> tuple[Tensor, tuple, dict[str, Any]]:
    h, rest, kwargs = inputs
    return h.float(), rest, kwargs


__all__ = ["INITS", "ReconstructConfig", "block_inputs", "calibration_batches", "reconstruct", "run_block",
           "transformer_blocks"]
