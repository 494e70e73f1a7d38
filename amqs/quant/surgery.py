"""Model surgery: swap the modules a :class:`~amqs.quant.assignment.BitAssignment` names for quantized ones.

Module names are the qualified names of ``model.named_modules()``. Which modules are quantized by
default, and their selection by regex (:func:`~amqs.quant.targets.select_modules`), live in
:mod:`amqs.quant.targets`; the names are re-exported here.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from amqs.quant.assignment import BitAssignment, ModuleBits
from amqs.quant.functions import SCHEMES
from amqs.quant.modules import ActQuant, QuantEmbedding, QuantLinear
from amqs.quant.targets import (  # noqa: F401  (selection lives in targets.py; re-exported for callers of surgery)
    BERT_EMBEDDING_PATTERN,
    BERT_ENCODER_LINEAR_PATTERN,
    DEFAULT_EMBEDDING_PATTERNS,
    DEFAULT_LINEAR_PATTERNS,
    select_modules,
)

QuantModule = QuantLinear | QuantEmbedding


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def apply_assignment(
    model: nn.Module,
    assignment: BitAssignment,
    *,
    scheme: str | None = None,
    act_symmetric: bool | None = None,
    act_lsq: bool = False,
    act_momentum: float = 0.9,
) -> list[str]:
    """Replace the assignment's modules in place by QuantLinear / QuantEmbedding.

    ``scheme`` overrides ``assignment.scheme``; activation quantizers of the
    linears use ``assignment.act_bits`` (``act_symmetric`` defaults to
    ``act_lsq``). Everything is validated before the first replacement, so an
    error leaves the model untouched: a missing module raises ``ValueError``, a
    wrong module type ``TypeError``, a shape mismatch ``ValueError``. Modules that
    are already quantized with the same scheme only get their bits updated
    (keeping LSQ steps / activation statistics); otherwise they are rebuilt
    around the same weight Parameters. Returns the names, in assignment order.

    Example:
        >>> from amqs.quant.assignment import uniform_assignment
        >>> m = nn.Sequential(nn.Linear(4, 4))
        >>> apply_assignment(m, uniform_assignment(m, [r"0"], 8, embedding_patterns=()))
        ['0']
    """
    scheme = scheme or assignment.scheme
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; expected one of {SCHEMES}")
    symmetric = act_lsq if act_symmetric is None else act_symmetric
    plan = []
    for name, mb in assignment.modules.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"assignment names module {name!r}, which {type(model).__name__} does not have") from None
        expected = nn.Linear if mb.kind == "linear" else nn.Embedding
        if not isinstance(module, expected):
            raise TypeError(f"{name}: kind {mb.kind!r} needs an nn.{expected.__name__}, found {type(module).__name__}")
        if tuple(module.weight.shape) != (mb.out_features, mb.in_features):
            raise ValueError(
                f"{name}: assignment expects weight shape {(mb.out_features, mb.in_features)}, "
                f"model has {tuple(module.weight.shape)}"
            )
        plan.append((name, mb, module))

    for name, mb, module in plan:
        bits = torch.tensor(mb.bits, dtype=torch.int64)
        if isinstance(module, (QuantLinear, QuantEmbedding)) and module.scheme == scheme:
            module.set_bits(bits)
            if isinstance(module, QuantLinear) and module.act_quant.bits != _norm_act_bits(assignment.act_bits):
                module.act_quant = ActQuant(
                    assignment.act_bits, symmetric=symmetric, momentum=act_momentum, lsq=act_lsq
                ).to(module.weight.device)
            continue
        if mb.kind == "linear":
            new: nn.Module = QuantLinear.from_linear(
                module,
                bits,
                scheme,
                assignment.act_bits,
                symmetric,
                act_lsq=act_lsq,
                act_momentum=act_momentum,
            )
        else:
            new = QuantEmbedding.from_embedding(module, bits, scheme)
        _set_submodule(model, name, new)
    return [name for name, _, _ in plan]


def _norm_act_bits(bits: int | None) -> int | None:
    return None if bits in (None, 32) else bits


def quantized_modules(model: nn.Module) -> dict[str, QuantModule]:
    """All QuantLinear / QuantEmbedding modules by name, in model order.

    Example:
        >>> quantized_modules(nn.Sequential(nn.Linear(2, 2)))
        {}
    """
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantLinear, QuantEmbedding))}


def extract_assignment(model: nn.Module, *, meta: Mapping[str, Any] | None = None) -> BitAssignment:
    """Read the current bit-widths of a quantized model back into a BitAssignment.

    Requires a single scheme and a single activation bit-width across modules.

    Example:
        >>> from amqs.quant.assignment import uniform_assignment
        >>> m = nn.Sequential(nn.Linear(4, 4))
        >>> a = uniform_assignment(m, [r"0"], 4, embedding_patterns=())
        >>> _ = apply_assignment(m, a)
        >>> extract_assignment(m) == a
        True
    """
    qmods = quantized_modules(model)
    if not qmods:
        raise ValueError(f"{type(model).__name__} has no quantized modules; run apply_assignment first")
    schemes = {m.scheme for m in qmods.values()}
    act_bits = {m.act_quant.bits for m in qmods.values() if isinstance(m, QuantLinear)}
    if len(schemes) > 1 or len(act_bits) > 1:
        raise ValueError(f"mixed schemes {sorted(schemes)} / act_bits {act_bits} cannot form one BitAssignment")
    modules = {
        name: ModuleBits(
            m.num_subgroups,
            tuple(m.bits.tolist()),
            m.weight.shape[0],
            m.weight.shape[1],
            "linear" if isinstance(m, QuantLinear) else "embedding",
        )
        for name, m in qmods.items()
    }
    return BitAssignment(
        modules=modules, scheme=schemes.pop(), act_bits=act_bits.pop() if act_bits else None, meta=dict(meta or {})
    )
