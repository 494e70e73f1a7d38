"""Mixed-precision, per-subgroup fake quantization for BERT models.

Layers: :mod:`~amqs.quant.functions` (pure tensor math), :mod:`~amqs.quant.modules`
(QuantLinear / QuantEmbedding / ActQuant), :mod:`~amqs.quant.assignment` (the
BitAssignment format), :mod:`~amqs.quant.targets` (which modules are quantized: default
patterns, selection by regex), :mod:`~amqs.quant.surgery` (applying an assignment to a model),
:mod:`~amqs.quant.size` (exact storage accounting) and :mod:`~amqs.quant.budget` (size budgets
and the rule that turns one into a target size).
"""

from amqs.quant.assignment import FORMAT_VERSION, BitAssignment, ModuleBits, shuffle_bits, uniform_assignment
from amqs.quant.budget import BUDGET_KINDS, Budget, budget_target_bits
from amqs.quant.functions import (
    ALLOWED_BITS,
    SCHEMES,
    choose_qparams_minmax,
    choose_qparams_symmetric,
    choose_qparams_ternary_twn,
    dequantize,
    fake_quantize,
    from_subgroups,
    init_lsq_step,
    lsq_fake_quantize,
    qrange,
    quantize_subgroups,
    quantize_to_int,
    sqnr_db,
    to_subgroups,
)
from amqs.quant.modules import ActQuant, QuantEmbedding, QuantLinear
from amqs.quant.size import SizeReport, model_size, pruned_fraction, weight_bits_of
from amqs.quant.surgery import apply_assignment, extract_assignment, quantized_modules
from amqs.quant.targets import (
    BERT_EMBEDDING_PATTERN,
    BERT_ENCODER_LINEAR_PATTERN,
    DEFAULT_EMBEDDING_PATTERNS,
    DEFAULT_LINEAR_PATTERNS,
    select_modules,
)

__all__ = [
    "ALLOWED_BITS",
    "BUDGET_KINDS",
    "BERT_EMBEDDING_PATTERN",
    "BERT_ENCODER_LINEAR_PATTERN",
    "DEFAULT_EMBEDDING_PATTERNS",
    "DEFAULT_LINEAR_PATTERNS",
    "FORMAT_VERSION",
    "SCHEMES",
    "ActQuant",
    "BitAssignment",
    "Budget",
    "ModuleBits",
    "QuantEmbedding",
    "QuantLinear",
    "SizeReport",
    "apply_assignment",
    "budget_target_bits",
    "choose_qparams_minmax",
    "choose_qparams_symmetric",
    "choose_qparams_ternary_twn",
    "dequantize",
    "extract_assignment",
    "fake_quantize",
    "from_subgroups",
    "init_lsq_step",
    "lsq_fake_quantize",
    "model_size",
    "pruned_fraction",
    "qrange",
    "quantize_subgroups",
    "quantize_to_int",
    "quantized_modules",
    "select_modules",
    "sqnr_db",
    "to_subgroups",
    "shuffle_bits",
    "uniform_assignment",
    "weight_bits_of",
]
