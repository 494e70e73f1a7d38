"""amqs.export.materialize: fake-quantized BERT -> integer arrays, pruned neurons and heads removed.

Also holds the helpers shared with test_graph.py: a tiny BERT (or RoBERTa, DistilBERT) with random
(non-zero) biases, so that folding the constant output of a removed neuron or head into the next bias
is not trivially zero (HF initialises biases at 0), quantized with a mixed assignment and calibrated
by a few train-mode forwards. Bit functions see BERT-spelled module names in every family.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import pytest
import torch

from amqs.export.materialize import materialize
from amqs.models.family import canonical_name, family_of, under_prefix
from amqs.quant import DEFAULT_LINEAR_PATTERNS, QuantLinear, apply_assignment, uniform_assignment
from amqs.quant.modules import ActQuant
from tests.tiny import batch, tiny_bert, tiny_model

HEAD_DIM = 16  # tiny BERT: hidden 64, 4 heads
SUBGROUPS = 16  # 4 rows per subgroup in the 64-row matrices, so 4 subgroups per head
BitsFn = Callable[[str, int], Sequence[int]]


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-zero biases, non-trivial LayerNorms, a classifier that gives logits of order 1."""
    g = torch.Generator().manual_seed(seed)
    first, second = family_of(model).head  # BERT: the pooler, then the classifier
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith((first + ".", second + ".")):
                if name.endswith("weight"):
                    p.copy_(torch.randn(p.shape, generator=g) * (0.1 if name.startswith(first + ".") else 0.3))
            elif "LayerNorm" in canonical_name(name):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return model


def mixed_bits(seed: int) -> BitsFn:
    """Random {0, 2, 4, 8} per subgroup (not grouped by bit-width)."""
    rng = np.random.default_rng(seed)
    return lambda name, groups: rng.choice([0, 2, 4, 8], size=groups).tolist()


def calibrate(model: torch.nn.Module, steps: int = 3) -> torch.nn.Module:
    model.train()
    with torch.no_grad():
        for s in range(steps):
            b = batch(100 + s, 8, 12)
            b.pop("labels")
            b["attention_mask"][:2, 9:] = 0
            model(**b)
    return model.eval()


def quant_bert(seed: int = 0, bits: Optional[BitsFn] = None, *, uniform: int = 8, scheme: str = "minmax",
               act_bits: Optional[int] = 8, act_symmetric: Optional[bool] = None, act_lsq: bool = False,
               patterns: Sequence[str] = DEFAULT_LINEAR_PATTERNS, subgroups=SUBGROUPS, calibrated: bool = True,
               emb_bits: int = 8, model_type: str = "bert", **config) -> torch.nn.Module:
    """A randomized tiny model of a family with an assignment applied (``bits(bert_name, G)`` for the encoder
    linears, by their BERT-spelled names)."""
    model = randomize(tiny_model(model_type, seed, **config), seed)
    a = uniform_assignment(model, patterns, uniform, num_subgroups=subgroups, scheme=scheme, act_bits=act_bits,
                           embedding_bits=emb_bits)
    if bits is not None:
        a = a.with_bits({n: bits(canonical_name(n), mb.num_subgroups) for n, mb in a.modules.items()
                         if mb.kind == "linear" and under_prefix(n, "bert.encoder.")})
    apply_assignment(model, a, act_symmetric=act_symmetric, act_lsq=act_lsq)
    return calibrate(model) if calibrated else model.eval()


def prune_heads(base: BitsFn, heads: dict[int, Sequence[int]]) -> BitsFn:
    """``base``, with every value row of ``heads[layer]`` pruned."""
    per_head = HEAD_DIM * SUBGROUPS // 64

    def bits(name: str, groups: int) -> list[int]:
        out = list(base(name, groups))
        for layer, hs in heads.items():
            if name == f"bert.encoder.layer.{layer}.attention.self.value":
                for h in hs:
                    out[h * per_head:(h + 1) * per_head] = [0] * per_head
                # keep the other heads' value rows alive, so only the chosen heads go
                for h in set(range(4)) - set(hs):
                    out[h * per_head] = 8
        return out
    return bits


def test_arrays_reproduce_the_fake_quantized_weights() -> None:
    model = quant_bert(0, mixed_bits(0))
    arrays = materialize(model, remove_pruned=False)
    q = model.bert.encoder.layer[0].attention.self.query
    m = arrays.layers[0].query
    ref = q.quantized_weight().detach().numpy()
    np.testing.assert_allclose(m.weight, ref, rtol=0, atol=1e-6)
    # weight = (codes - zero_point) * scale, row by row, codes within each row's bit-width
    deq = (m.codes.astype(np.float32) - m.zero_point[:, None]) * m.scale[:, None]
    np.testing.assert_allclose(deq, ref, rtol=0, atol=1e-6)
    assert (m.codes < (1 << m.bits)[:, None]).all()
    assert (m.codes[m.bits == 0] == 0).all() and (m.scale[m.bits == 0] == 0).all()
    np.testing.assert_array_equal(m.bits, np.repeat(q.bits.numpy(), 4))
    assert m.act is not None and m.act.qmin == 0 and m.act.qmax == 255
    assert arrays.pooler.codes is None and arrays.word.codes is not None and arrays.word.act is None


@pytest.mark.parametrize("scheme", ["symmetric", "twn", "lsq"])
def test_symmetric_schemes_store_unsigned_codes(scheme: str) -> None:
    model = quant_bert(1, mixed_bits(1), scheme=scheme)
    arrays = materialize(model, remove_pruned=False)
    for m in arrays.matrices():
        if m.codes is None:
            continue
        ref = model.get_submodule(m.name).quantized_weight().detach().numpy()
        np.testing.assert_allclose(m.weight, ref, rtol=0, atol=1e-6)
        live = m.bits > 0
        # symmetric levels shifted to unsigned storage: zero point 2**(b-1) - 1 (+1 at 8 bits)
        want_zp = np.where(m.bits == 8, 128, (1 << (m.bits - 1)) - 1)
        np.testing.assert_array_equal(m.zero_point[live], want_zp[live])
        assert (m.codes[live] < (1 << m.bits[live])[:, None]).all()
        # what a symmetric row holds at 8 bits: code - 128 = the signed level, within [-127, 127]
        assert (m.codes[m.bits == 8] >= 1).all()
        assert (m.scale[~live] == 0).all() and (m.zero_point[~live] == 0).all()


def test_pruned_ffn_neurons_and_heads_are_removed() -> None:
    model = quant_bert(2, prune_heads(mixed_bits(2), {0: [1, 3]}))
    inter_bits = model.bert.encoder.layer[0].intermediate.dense.bits
    pruned_neurons = int((inter_bits == 0).sum()) * 128 // SUBGROUPS
    assert pruned_neurons > 0
    kept = materialize(model, remove_pruned=False)
    gone = materialize(model)
    ly, full = gone.layers[0], kept.layers[0]
    assert (ly.num_heads, ly.removed_heads) == (2, [1, 3]) and (full.num_heads, full.removed_heads) == (4, [])
    assert ly.removed_neurons == pruned_neurons and full.removed_neurons == 0
    assert ly.inter.shape == (128 - pruned_neurons, 64) and ly.out.shape == (64, 128 - pruned_neurons)
    assert ly.out.codes.shape == ly.out.shape and not (ly.inter.bits == 0).any()
    for m in (ly.query, ly.key, ly.value):
        assert m.shape == (32, 64) and len(m.bits) == len(m.scale) == len(m.group) == 32
    assert ly.attn_out.shape == (64, 32)
    # the kept rows are the original ones (heads 0 and 2)
    rows = np.r_[0:16, 32:48]
    np.testing.assert_array_equal(ly.query.codes, full.query.codes[rows])
    np.testing.assert_array_equal(ly.attn_out.codes, full.attn_out.codes[:, rows])
    # the removed parts' constant outputs went into the next biases
    assert not np.allclose(ly.attn_out.bias, full.attn_out.bias)
    assert not np.allclose(ly.out.bias, full.out.bias)
    # layer 1 had no whole head pruned
    assert gone.layers[1].num_heads == 4


def test_folded_bias_matches_the_removed_contribution() -> None:
    """Bias + W2[:, gone] @ act_quant(gelu(b1[gone])): the pruned neurons' constant, worked out in torch."""
    model = quant_bert(3, mixed_bits(3))
    blk = model.bert.encoder.layer[0]
    gone = (blk.intermediate.dense.bits == 0).repeat_interleave(128 // SUBGROUPS)
    assert gone.any()
    with torch.no_grad():
        const = torch.nn.functional.gelu(blk.intermediate.dense.bias[gone])
        x = torch.zeros(128)
        x[gone] = const
        aq = blk.output.dense.act_quant
        # what output.dense adds for those columns, through its own (eval-mode) input quantizer
        w2 = blk.output.dense.quantized_weight()
        want = blk.output.dense.bias + w2[:, gone] @ aq(x)[gone]
    got = materialize(model).layers[0].out.bias
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-5)


def test_uncalibrated_activation_quantizer_raises() -> None:
    model = quant_bert(0, calibrated=False)
    with pytest.raises(ValueError, match=r"bert\.encoder\.layer\.0\.attention\.self\.query: .*never saw data"):
        materialize(model)


def test_unexportable_bit_widths_raise() -> None:
    model = quant_bert(0)
    model.bert.encoder.layer[1].output.dense.set_bits([1] + [8] * (SUBGROUPS - 1))
    with pytest.raises(ValueError, match=r"layer\.1\.output\.dense: bit-widths 1 and 32 are not exportable"):
        materialize(model)


def test_unsupported_models_raise() -> None:
    with pytest.raises(TypeError, match="BertForSequenceClassification"):
        materialize(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="position_embedding_type"):
        materialize(tiny_bert(0, position_embedding_type="relative_key"))
    with pytest.raises(ValueError, match="hidden_act"):
        materialize(tiny_bert(0, hidden_act="gelu_new"))


def test_fp32_model_has_no_codes_and_keeps_everything() -> None:
    model = randomize(tiny_bert(4), 4)
    arrays = materialize(model)
    assert all(m.codes is None and m.act is None for m in arrays.matrices())
    assert [ly.num_heads for ly in arrays.layers] == [4, 4] and arrays.layers[0].inter.shape == (128, 64)
    np.testing.assert_array_equal(arrays.layers[1].value.weight,
                                  model.bert.encoder.layer[1].attention.self.value.weight.detach().numpy())


def test_disabled_act_quant_gives_weight_only_matrix() -> None:
    model = quant_bert(0, act_bits=None)
    assert isinstance(model.bert.encoder.layer[0].output.dense, QuantLinear)
    assert isinstance(model.bert.encoder.layer[0].output.dense.act_quant, ActQuant)
    arrays = materialize(model)
    assert all(m.act is None for m in arrays.matrices()) and arrays.layers[0].out.codes is not None


@pytest.mark.parametrize("model_type", ["roberta", "distilbert"])
def test_family_arrays_carry_their_own_module_names(model_type: str) -> None:
    model = quant_bert(6, mixed_bits(6), model_type=model_type)
    arrays = materialize(model, remove_pruned=False)
    family = family_of(model)
    assert arrays.layers[1].inter.name == family.layer_module(1, "intermediate.dense")
    assert (arrays.pooler.name, arrays.classifier.name) == family.head
    for m in arrays.matrices():  # every matrix is the module of that name, its fake-quantized weight exactly
        module = model.get_submodule(m.name)
        ref = module.quantized_weight() if hasattr(module, "quantized_weight") else module.weight
        np.testing.assert_allclose(m.weight, ref.detach().numpy(), rtol=0, atol=1e-6)
    assert len(arrays.matrices()) == (2 if model_type == "distilbert" else 3) + 12 + 2


def test_other_families_are_refused_by_name() -> None:
    from transformers import ElectraConfig, ElectraForSequenceClassification

    electra = ElectraForSequenceClassification(ElectraConfig(vocab_size=50, embedding_size=32, hidden_size=32,
                                                             num_hidden_layers=1, num_attention_heads=4,
                                                             intermediate_size=64))
    with pytest.raises(ValueError, match="model_type 'electra' is not supported; amqs supports bert, roberta"):
        materialize(electra)
