"""Exact size accounting, checked against arithmetic written out by hand.

Tiny BERT: H=64, 2 layers, FFN 128, vocab 100, 64 positions, 2 token types, 2 labels.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from amqs.quant.assignment import uniform_assignment
from amqs.quant.modules import QuantLinear
from amqs.quant.size import model_size, qparam_bits, quant_weight_bits, weight_bits_of
from amqs.quant.surgery import apply_assignment

from tests.tiny import tiny_bert, tiny_model

H, L, FFN, VOCAB, POS, TYPES, LABELS = 64, 2, 128, 100, 64, 2, 2

# Per Transformer layer
LAYER_WEIGHTS = 4 * H * H + H * FFN + FFN * H  # Q, K, V, attn-out; FFN in; FFN out = 32768
LAYER_BIASES = 4 * H + FFN + H  # = 448
LAYER_LN = 2 * 2 * H  # two LayerNorms (gamma, beta) = 256
LAYER_MATRICES = 6
# Outside the encoder
EMB_WEIGHTS = VOCAB * H + POS * H + TYPES * H  # = 10624
EMB_LN = 2 * H
HEAD = (H * H + H) + (LABELS * H + LABELS)  # pooler + classifier, never quantized = 4290

FP32_ENCODER_BITS = L * (LAYER_WEIGHTS + LAYER_BIASES + LAYER_LN) * 32
FP32_TOTAL_BITS = FP32_ENCODER_BITS + (EMB_WEIGHTS + EMB_LN + HEAD) * 32



def test_fp32_model() -> None:
    model = tiny_bert()
    report = model_size(model)
    assert report.fp32_total_bits == FP32_TOTAL_BITS == 81986 * 32  # == every parameter at 32 bits
    assert report.total_bits == FP32_TOTAL_BITS
    assert report.encoder_bits == report.fp32_encoder_bits == FP32_ENCODER_BITS == 2_142_208
    assert report.encoder_bytes == 267_776 and report.total_compression == 1.0
    assert "bert.embeddings" not in report.per_module  # position_ids / token_type_ids are not weights


def test_uniform_8bit_minmax() -> None:
    model = tiny_bert()
    apply_assignment(model, uniform_assignment(model, bits=8, num_subgroups=4, scheme="minmax", act_bits=8))
    report = model_size(model)
    qparams = LAYER_MATRICES * 4 * (32 + 8)  # fp32 scale + 8-bit zero point per subgroup
    act_ranges = LAYER_MATRICES * 2 * 32  # one ActQuant (min, max) per QuantLinear
    layer = LAYER_WEIGHTS * 8 + qparams + (LAYER_BIASES + LAYER_LN) * 32 + act_ranges
    assert layer == 286_016
    assert report.encoder_bits == L * layer
    assert report.encoder_bytes == math.ceil(L * layer / 8) == 71_504
    embeddings = EMB_WEIGHTS * 8 + 3 * 40 + EMB_LN * 32  # 1 subgroup per table
    assert report.total_bits == L * layer + embeddings + HEAD * 32 == 798_520
    assert report.fp32_encoder_bits == FP32_ENCODER_BITS and report.fp32_total_bits == FP32_TOTAL_BITS
    assert report.encoder_compression == pytest.approx(267_776 / 71_504)
    # ~4x minus overhead (qparams, fp32 biases/LayerNorms, activation ranges)
    assert 3.5 < report.encoder_compression < 4.0
    query = "bert.encoder.layer.0.attention.self.query"
    assert report.per_module[query] == H * H * 8 + 4 * 40 + H * 32
    assert report.per_module[query + ".act_quant"] == 64
    assert report.per_module["classifier"] == (LABELS * H + LABELS) * 32


def test_mixed_bits_weight_accounting() -> None:
    lin = nn.Linear(64, 64)
    q = QuantLinear.from_linear(lin, [0, 2, 4, 32, 1, 8, 8, 8])  # 8 rows per subgroup
    codes = 8 * 64 * (0 + 2 + 4 + 32 + 1 + 8 + 8 + 8)
    assert quant_weight_bits(q) == codes + 5 * 40 + 1 * 32  # 2,4,8,8,8: 40 each; 1-bit: scale; 0/32: none
    q = QuantLinear.from_linear(lin, [0, 2, 4, 32, 1, 8, 8, 8], scheme="symmetric")
    assert quant_weight_bits(q) == codes + 6 * 32
    assert qparam_bits("lsq", torch.tensor([0, 1, 4, 32])).tolist() == [0, 32, 32, 0]
    # lsq: the learned step is the stored scale, not counted twice
    q = QuantLinear.from_linear(lin, [8, 8], scheme="lsq", act_bits=None)
    report = model_size(nn.Sequential(q), encoder_prefix="0")
    assert report.total_bits == 64 * 64 * 8 + 2 * 32 + 64 * 32


def test_two_bit_is_a_quarter_of_eight_bit() -> None:
    model = tiny_bert()
    a8 = uniform_assignment(model, bits=8, num_subgroups=4)
    a2 = uniform_assignment(model, bits=2, num_subgroups=4)
    total8, avg8 = weight_bits_of(a8)
    total2, avg2 = weight_bits_of(a2)
    assert (total8, avg8) == (L * LAYER_WEIGHTS * 8, 8.0)
    assert (total2, avg2) == (total8 // 4, 2.0)
    # embeddings only with encoder_prefix=None
    assert weight_bits_of(a8, encoder_prefix=None)[0] == total8 + EMB_WEIGHTS * 8
    apply_assignment(model, a2)
    report = model_size(model)
    overhead = L * ((LAYER_BIASES + LAYER_LN) * 32 + LAYER_MATRICES * (4 * 40 + 64))
    assert report.encoder_bits == total2 + overhead


def test_weight_bits_with_pruning() -> None:
    model = tiny_bert()
    a = uniform_assignment(model, bits=8, num_subgroups=4)
    name = "bert.encoder.layer.0.intermediate.dense"  # 128 x 64, 32 rows per subgroup
    a = a.with_bits({name: [0, 0, 4, 8]})
    total, avg = weight_bits_of(a)
    expected = L * LAYER_WEIGHTS * 8 - FFN * H * 8 + 32 * 64 * (4 + 8)
    assert total == expected and avg == pytest.approx(expected / (L * LAYER_WEIGHTS))
    with pytest.raises(ValueError, match="no module"):
        weight_bits_of(a, encoder_prefix="roberta.")


def test_shared_parameters_counted_once() -> None:
    a, b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    b.weight = a.weight
    assert model_size(nn.Sequential(a, b), encoder_prefix="0").total_bits == 16 * 32


@pytest.mark.parametrize("model_type", ["roberta", "distilbert"])
def test_every_family_has_the_tiny_berts_encoder_bytes(model_type: str) -> None:
    """The encoder of every family is 6 Linears and 2 LayerNorms per layer: the same bits as BERT's, under its own
    prefix (roberta.encoder., distilbert.transformer.) through the BERT-spelled default."""
    model = tiny_model(model_type)
    assert model_size(model).encoder_bits == FP32_ENCODER_BITS
    apply_assignment(model, uniform_assignment(model, bits=8, num_subgroups=4, scheme="minmax", act_bits=8))
    report = model_size(model)
    assert report.encoder_bits == L * 286_016 and report.encoder_bytes == 71_504  # test_uniform_8bit_minmax's
    a2 = uniform_assignment(model, bits=2, num_subgroups=4)
    assert weight_bits_of(a2) == (L * LAYER_WEIGHTS * 2, 2.0)
    own = "roberta.encoder." if model_type == "roberta" else "distilbert.transformer."
    assert model_size(model, own).encoder_bits == report.encoder_bits  # the own prefix says the same
