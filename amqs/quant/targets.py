"""Which modules are quantized: BERT's default name patterns and the regex selection over them.

Module names are the qualified names of ``model.named_modules()`` and patterns are matched with
``re.fullmatch``, against each name and its BERT spelling (:func:`amqs.models.family.name_matches`), so the
BERT-spelled defaults select the same modules of a RoBERTa or a DistilBERT. By default only the encoder
linears and the embedding tables are quantized; the head (``bert.pooler.dense`` and ``classifier``, or the
family's) stays in fp32 (as in Q-BERT / AQ-BERT).
Both :mod:`~amqs.quant.assignment` (building an assignment) and :mod:`~amqs.quant.surgery`
(applying one) select modules through this file, which depends on neither.
"""

from __future__ import annotations

import re
from typing import Sequence

from torch import nn

from amqs.models.family import name_matches

# The 6 linears of every Transformer layer: Q, K, V, attention output, FFN in, FFN out.
BERT_ENCODER_LINEAR_PATTERN = (
    r"bert\.encoder\.layer\.\d+\."
    r"(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
)
BERT_EMBEDDING_PATTERN = r"bert\.embeddings\.(word|position|token_type)_embeddings"
DEFAULT_LINEAR_PATTERNS: tuple[str, ...] = (BERT_ENCODER_LINEAR_PATTERN,)
DEFAULT_EMBEDDING_PATTERNS: tuple[str, ...] = (BERT_EMBEDDING_PATTERN,)


def select_modules(
    model: nn.Module,
    patterns: str | Sequence[str],
    module_type: type[nn.Module] | tuple[type[nn.Module], ...] = nn.Linear,
) -> list[str]:
    """Names of ``module_type`` modules whose name fullmatches any pattern.

    Quantized modules count too (``QuantLinear`` is an ``nn.Linear``), so the
    same patterns can re-select modules after surgery. A pattern matches a name
    or its BERT spelling (``distilbert.transformer.layer.0.ffn.lin1`` is
    ``bert.encoder.layer.0.intermediate.dense``). Names come in model order.
    Raises ``ValueError`` naming any pattern that matches nothing.

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
        matched = [p for p in compiled if name_matches(p, name)]
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


__all__ = ["BERT_EMBEDDING_PATTERN", "BERT_ENCODER_LINEAR_PATTERN", "DEFAULT_EMBEDDING_PATTERNS",
           "DEFAULT_LINEAR_PATTERNS", "select_modules"]
