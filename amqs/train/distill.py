"""Task loss plus knowledge distillation from the fp32 teacher (logits; hidden states optional).

TernaryBERT/KDLSQ-style: the student matches the teacher's softened logits and, optionally, every
hidden state (embedding output and each layer) by MSE.

Example::

    loss_fn = DistillLoss(teacher, DistillConfig(kd_weight=1.0, hidden_weight=1.0))
    fit(student, loader, train_cfg, loss_fn=loss_fn)
"""

from __future__ import annotations

from dataclasses import asdict

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from amqs.config import CONF_DIR, DistillConfig


def distill_label(cfg: DistillConfig) -> str:
    """The loss in one word for results tables: the conf/distill preset it equals (``hidden``, ``logits``,
    ``none``), else its weights spelled out, so two different losses never share a label.

    Example:
        >>> distill_label(DistillConfig(kd_weight=1.0, hidden_weight=1.0)), distill_label(DistillConfig(kd_weight=0.0))
        ('hidden', 'none')
        >>> distill_label(DistillConfig(ce_weight=0.0, kd_weight=1.0, temperature=2.0, hidden_weight=1.0))
        'ce0-kd1-t2-hidden1'
    """
    keys = ("ce_weight", "kd_weight", "temperature", "hidden_weight")
    weights = tuple(float(getattr(cfg, k)) for k in keys)
    for preset in sorted((CONF_DIR / "distill").glob("*.yaml")):
        values = {**asdict(DistillConfig()), **(yaml.safe_load(preset.read_text()) or {})}
        if tuple(float(values[k]) for k in keys) == weights:
            return preset.stem
    return "ce{:g}-kd{:g}-t{:g}-hidden{:g}".format(*weights)


class DistillLoss:
    """A ``loss_fn(student, batch)`` for :func:`amqs.train.fit`; the teacher stays frozen in eval mode."""

    def __init__(self, teacher: nn.Module | None, cfg: DistillConfig) -> None:
        if teacher is None and (cfg.kd_weight or cfg.hidden_weight):
            raise ValueError("distillation weights are set but no teacher was given")
        self.teacher, self.cfg = teacher, cfg
        if teacher is not None:
            teacher.eval().requires_grad_(False)

    def __call__(self, student: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.cfg
        hidden = cfg.hidden_weight > 0
        out = student(**batch, output_hidden_states=hidden)
        loss = cfg.ce_weight * out.loss if cfg.ce_weight else out.logits.new_zeros(())
        if self.teacher is None:
            return loss
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            t_out = self.teacher(**inputs, output_hidden_states=hidden)
        if cfg.kd_weight:
            t = cfg.temperature
            kd = F.kl_div(F.log_softmax(out.logits / t, -1), F.softmax(t_out.logits / t, -1), reduction="batchmean")
            loss = loss + cfg.kd_weight * t * t * kd
        if hidden:
            mask = batch["attention_mask"].unsqueeze(-1).to(out.logits.dtype)
            denom = mask.sum() * out.hidden_states[0].shape[-1]
            mse = sum(((s - h) ** 2 * mask).sum() / denom for s, h in zip(out.hidden_states, t_out.hidden_states))
            loss = loss + cfg.hidden_weight * mse
        return loss
