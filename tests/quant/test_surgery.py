"""Tests of module selection and in-place surgery on a tiny random BERT (and RoBERTa, DistilBERT)."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from transformers import BertForSequenceClassification

from amqs.models.family import family_of
from amqs.quant.assignment import BitAssignment, ModuleBits, uniform_assignment
from amqs.quant.modules import QuantEmbedding, QuantLinear
from amqs.quant.surgery import (
    BERT_ENCODER_LINEAR_PATTERN,
    apply_assignment,
    extract_assignment,
    quantized_modules,
    select_modules,
)
from tests.tiny import FAMILIES, tiny_model
from tests.tiny import tiny_bert as _tiny_bert


def tiny_bert() -> BertForSequenceClassification:
    return _tiny_bert().eval()


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 100, (4, 16), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_select_modules() -> None:
    model = tiny_bert()
    names = select_modules(model, [BERT_ENCODER_LINEAR_PATTERN])
    assert len(names) == 12
    assert names[:6] == [
        f"bert.encoder.layer.0.{s}"
        for s in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        )
    ]
    assert select_modules(model, r"classifier") == ["classifier"]
    assert select_modules(model, r".*embeddings", nn.Embedding) == [
        "bert.embeddings.word_embeddings",
        "bert.embeddings.position_embeddings",
        "bert.embeddings.token_type_embeddings",
    ]
    with pytest.raises(ValueError, match=re.escape(r"r'bert\.decoder' matched no Linear")):
        select_modules(model, [BERT_ENCODER_LINEAR_PATTERN, r"bert\.decoder"])
    # fullmatch, not search: a prefix alone matches nothing
    with pytest.raises(ValueError):
        select_modules(model, r"bert\.encoder")


def test_apply_uniform_8bit() -> None:
    model = tiny_bert()
    inputs = _inputs()
    with torch.no_grad():
        ref = model(**inputs).logits
    assignment = uniform_assignment(model, bits=8, num_subgroups=4)
    replaced = apply_assignment(model, assignment)
    assert replaced == list(assignment.modules)
    qmods = quantized_modules(model)
    assert sorted(qmods) == sorted(replaced)
    assert sum(isinstance(m, QuantLinear) for m in qmods.values()) == 12
    assert sum(isinstance(m, QuantEmbedding) for m in qmods.values()) == 3
    assert type(model.bert.pooler.dense) is nn.Linear and type(model.classifier) is nn.Linear
    assert all(m.num_subgroups == 4 for m in qmods.values() if isinstance(m, QuantLinear))
    model.train()
    with torch.no_grad():
        model.bert(**inputs)  # calibrate activation ranges (dropout is irrelevant to min/max here)
    model.eval()
    with torch.no_grad():
        out = model(**inputs).logits
    assert torch.isfinite(out).all()
    assert ((out - ref).norm() / ref.norm()).item() < 0.05  # measured ~0.01


def test_apply_mixed_bits_and_pruning() -> None:
    model = tiny_bert()
    base = uniform_assignment(model, bits=8, num_subgroups=4, act_bits=None)
    name = "bert.encoder.layer.1.attention.self.value"
    assignment = base.with_bits({name: [0, 2, 4, 32]})
    apply_assignment(model, assignment)
    module = model.get_submodule(name)
    assert module.bits.tolist() == [0, 2, 4, 32]
    w = module.quantized_weight()
    assert bool((w[:16] == 0).all()) and torch.equal(w[48:], module.weight[48:])
    assert torch.isfinite(model(**_inputs()).logits).all()


def test_apply_is_idempotent_and_updates_bits() -> None:
    model = tiny_bert()
    a8 = uniform_assignment(model, bits=8, num_subgroups=2)
    apply_assignment(model, a8)
    query = model.bert.encoder.layer[0].attention.self.query
    weight = query.weight
    a4 = uniform_assignment(model, bits=4, num_subgroups=2)  # patterns re-select QuantLinears
    apply_assignment(model, a4)
    assert model.bert.encoder.layer[0].attention.self.query is query  # updated in place
    assert query.bits.tolist() == [4, 4] and query.weight is weight
    assert extract_assignment(model) == a4
    apply_assignment(model, a4, scheme="symmetric")  # other scheme: rebuilt around the same weight
    new = model.bert.encoder.layer[0].attention.self.query
    assert new is not query and new.scheme == "symmetric" and new.weight is weight


def test_apply_errors_leave_model_untouched() -> None:
    model = tiny_bert()
    good = ModuleBits(1, (8,), 64, 64, "linear")
    missing = BitAssignment(modules={"bert.encoder.layer.0.attention.self.query": good, "bert.nope": good})
    with pytest.raises(ValueError, match=r"'bert\.nope'"):
        apply_assignment(model, missing)
    assert not quantized_modules(model)  # validated before the first replacement
    with pytest.raises(TypeError, match=r"bert\.encoder\.layer\.0\.output.*LayerNorm|nn\.Linear.*BertOutput"):
        apply_assignment(model, BitAssignment(modules={"bert.encoder.layer.0.output": good}))
    wrong_shape = BitAssignment(modules={"bert.encoder.layer.0.intermediate.dense": good})
    with pytest.raises(ValueError, match=r"\(64, 64\).*\(128, 64\)"):
        apply_assignment(model, wrong_shape)
    emb = BitAssignment(modules={"classifier": ModuleBits(1, (8,), 2, 64, "embedding")})
    with pytest.raises(TypeError, match="nn.Embedding"):
        apply_assignment(model, emb)


def test_training_step_through_quantized_model() -> None:
    model = tiny_bert()
    apply_assignment(model, uniform_assignment(model, bits=4, num_subgroups=4, scheme="lsq"))
    model.train()
    out = model(**_inputs(), labels=torch.tensor([0, 1, 0, 1]))
    out.loss.backward()
    query = model.bert.encoder.layer[0].attention.self.query
    for p in (query.weight, query.step, model.bert.embeddings.word_embeddings.step):
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("model_type", FAMILIES)
def test_default_assignment_selects_the_six_linears_of_every_layer_in_each_family(model_type: str) -> None:
    model = tiny_model(model_type).eval()
    family = family_of(model)
    inputs = _inputs()
    with torch.no_grad():
        ref = model(**inputs).logits
    assignment = uniform_assignment(model, bits=8, num_subgroups=4)
    roles = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "intermediate.dense", "output.dense")
    linears = [n for n, m in assignment.modules.items() if m.kind == "linear"]
    assert linears == [family.layer_module(i, r) for i in range(2) for r in roles]
    tables = [n for n, m in assignment.modules.items() if m.kind == "embedding"]
    kinds = ("word", "position") if model_type == "distilbert" else ("word", "position", "token_type")
    assert tables == [f"{family.base}.embeddings.{k}_embeddings" for k in kinds]
    apply_assignment(model, assignment)
    assert all(type(model.get_submodule(n)) is nn.Linear for n in family.head)  # the head stays fp32
    model.train()
    with torch.no_grad():
        model(**inputs)  # calibrate activation ranges
    model.eval()
    with torch.no_grad():
        out = model(**inputs).logits
    assert ((out - ref).norm() / ref.norm()).item() < 0.05
