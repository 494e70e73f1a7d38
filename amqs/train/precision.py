"""Training precision: matmuls under bf16 autocast, everything that must be exact in fp32.

``train.precision``: ``fp32``, ``bf16`` or ``auto`` (what ``conf/train/*.yaml`` set): bf16 where the CPU has
native bf16 instructions (AVX512-BF16 or AMX-BF16) or on a CUDA device that supports it, fp32 elsewhere. Under
bf16 only the forward passes run under ``torch.autocast`` (Linear/matmul in bf16); the master weights, the
optimizer state, gradients' accumulation into them and the fake-quantization math (activation ranges, rounding,
scales, the supernet's mix of candidates) stay fp32: :class:`~amqs.quant.modules.ActQuant` quantizes an fp32 copy
of its input and the supernet mixes its candidates with autocast off. Evaluation runs in fp32, so reported
accuracy is the fake-quantized model's, comparable with an fp32 run and with the ONNX Runtime export.

A run resolves ``auto`` once, at its start (:func:`pin_precision`): its saved config, config hash and
provenance name the precision it trained in. Configs saved before this setting existed load as ``fp32``
(the schema default), which is what they ran.

Example::

    loss_fn = with_precision(DistillLoss(teacher, cfg.distill), "bf16", "cpu")
    loss = loss_fn(student, batch)   # forward in bf16 matmuls; loss.backward() as usual
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, ContextManager

import torch
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "auto")


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bf16 matmuls natively (so bf16 autocast is faster, not emulated)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    from amqs.utils.provenance import cpu_flags

    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


def resolve_precision(name: str, device: str | torch.device = "cpu") -> str:
    """``fp32`` or ``bf16`` for ``train.precision`` (``auto``: bf16 where :func:`native_bf16`).

    Example:
        >>> resolve_precision("fp32")
        'fp32'
    """
    if name not in PRECISIONS:
        raise ValueError(f"train.precision={name!r}: use one of {list(PRECISIONS)}")
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return name


def pin_precision(cfg: DictConfig, device: str | torch.device = "cpu") -> DictConfig:
    """``cfg`` (a copy when it changes) with ``train.precision`` resolved, logged once."""
    resolved = resolve_precision(cfg.train.precision, device)
    if resolved == cfg.train.precision:
        return cfg
    pinned = cfg.copy()
    with open_dict(pinned):
        pinned.train.precision = resolved
    why = "native bf16 on this device" if resolved == "bf16" else "no native bf16 on this device"
    log.info("train.precision=%s -> %s (%s)", cfg.train.precision, resolved, why)
    return pinned


def autocast(precision: str, device: str | torch.device = "cpu") -> ContextManager:
    """The forward-pass context of ``precision``: bf16 autocast, or nothing for fp32."""
    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def with_precision(loss_fn: Callable, precision: str, device: str | torch.device = "cpu") -> Callable:
    """``loss_fn`` whose forward pass runs under ``precision``'s autocast (backward stays outside it); the loss
    comes back in fp32."""
    if resolve_precision(precision, device) == "fp32":
        return loss_fn

    def loss(model, batch):
        with autocast(precision, device):
            out = loss_fn(model, batch)
        return out.float()

    loss.__wrapped__ = loss_fn  # type: ignore[attr-defined]
    return loss


def no_autocast(device_type: str = "cpu") -> ContextManager:
    """Turn autocast off inside (fake-quantization math that must stay fp32)."""
    return torch.autocast(device_type, enabled=False)
