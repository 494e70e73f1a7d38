"""Model surgery: select modules by regex and swap in quantized modules.

Module names are the qualified names of ``model.named_modules()`` and patterns
are matched with ``re.fullmatch``. By default only the BERT encoder linears and
the three embedding tables are quantized; ``bert.pooler.dense`` and
``classifier`` stay in fp32 (as in Q-BERT / AQ-BERT).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from torch import nn

from amqs.quant.functions import SCHEMES
from amqs.quant.modules import ActQuant, QuantEmbedding, QuantLinear

if TYPE_CHECKING:  # assignment.py imports this module; avoid the runtime cycle
    from amqs.quant.assignment import BitAssignment

# The 6 linears of every Transformer layer: Q, K, V, attention output, FFN in, FFN out.
BERT_ENCODER_LINEAR_PATTERN = (
    r"bert\.encoder\.layer\.\d+\."
    r"(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
)
BERT_EMBEDDING_PATTERN = r"bert\.embeddings\.(word|position|token_type)_embeddings"
DEFAULT_LINEAR_PATTERNS: tuple[str, ...] = (BERT_ENCODER_LINEAR_PATTERN,)
DEFAULT_EMBEDDING_PATTERNS: tuple[str, ...] = (BERT_EMBEDDING_PATTERN,)

QuantModule = QuantLinear | QuantEmbedding


def select_modules(
    model: nn.Module,
    patterns: str | Sequence[str],
    module_type: type[nn.Module] | tuple[type[nn.Module], ...] = nn.Linear,
) -> list[str]:
    """Names of ``module_type`` modules whose name fullmatches any pattern.

    Quantized modules count too (``QuantLinear`` is an ``nn.Linear``), so the
    same patterns can re-select modules after surgery. Names come in model
    order. Raises ``ValueError`` naming any pattern that matches nothing.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
        >>> select_modules(m, [r"\\d+"])
        ['0', '2']
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    compiled = [re.compile(p) for p in patterns]
    hits = {p.pattern: 0 for p in compiled}
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, module_type):
            continue
        matched = [p for p in compiled if p.fullmatch(name)]
        for p in matched:
            hits[p.pattern] += 1
        if matched:
            names.append(name)
    empty = [p for p, n in hits.items() if n == 0]
    if empty:
        kind = getattr(module_type, "__name__", str(module_type))
        shown = ", ".join(f"r'{p}'" for p in empty)
        raise ValueError(f"pattern(s) {shown} matched no {kind} module of {type(model).__name__}")
    return names


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def apply_assignment(
    model: nn.Module,
    assignment: "BitAssignment",
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


def extract_assignment(model: nn.Module, *, meta: Mapping[str, Any] | None = None) -> "BitAssignment":
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
    from amqs.quant.assignment import BitAssignment, ModuleBits

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
