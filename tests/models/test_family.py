"""amqs.models.family: each family's module names in BERT's spelling and back, on tiny random models."""

from __future__ import annotations

import pytest
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from amqs.models.family import (
    SUPPORTED,
    UnsupportedModelError,
    canonical_name,
    family_named,
    family_of,
    name_matches,
    under_prefix,
    uses_token_types,
)
from amqs.quant.targets import BERT_ENCODER_LINEAR_PATTERN

SIZES = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
MODELS = {
    "bert": lambda: BertForSequenceClassification(BertConfig(**SIZES)),
    "roberta": lambda: RobertaForSequenceClassification(RobertaConfig(**SIZES, type_vocab_size=1)),
    "distilbert": lambda: DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, hidden_dim=64)),
}


@pytest.mark.parametrize("model_type", SUPPORTED)
def test_every_module_name_round_trips_and_bert_keeps_its_names(model_type: str) -> None:
    model = MODELS[model_type]()
    family = family_of(model)
    assert family.model_type == model_type
    names = [n for n, _ in model.named_modules() if n]
    for name in names:
        assert family.own(family.canonical(name)) == name
        assert canonical_name(name) == family.canonical(name)
    if model_type == "bert":
        assert all(canonical_name(n) == n for n in names)


@pytest.mark.parametrize("model_type", SUPPORTED)
def test_the_six_linears_of_each_layer_in_bert_spelling(model_type: str) -> None:
    model = MODELS[model_type]()
    family = family_of(model)
    hits = [n for n, _ in model.named_modules() if name_matches(BERT_ENCODER_LINEAR_PATTERN, n)]
    assert len(hits) == 12 and all(under_prefix(n, "bert.encoder.") for n in hits)
    roles = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "intermediate.dense", "output.dense")
    assert hits == [family.layer_module(i, r) for i in range(2) for r in roles]
    first, second = family.head
    assert model.get_submodule(first).out_features == 32 and model.get_submodule(second).out_features == 2
    assert family.ffn_size(model.config) == 64 and family.hidden_act(model.config) == "gelu"
    assert uses_token_types(model.config) == (model_type == "bert")


def test_own_names_are_matched_too_and_other_names_are_left_alone() -> None:
    assert name_matches(r"distilbert\.transformer\.layer\.0\.ffn\.lin1", "distilbert.transformer.layer.0.ffn.lin1")
    assert not name_matches(r"bert\.pooler\.dense", "classifier.dense")
    assert canonical_name("pre_classifier") == "pre_classifier"
    assert canonical_name("distilbert.transformer.layer.1.attention.q_lin.weight") == \
        "bert.encoder.layer.1.attention.self.query.weight"
    assert under_prefix("distilbert.transformer", "bert.encoder.") and not under_prefix("classifier", "bert.")


def test_unsupported_types_name_the_supported_ones() -> None:
    with pytest.raises(UnsupportedModelError, match=r"model_type 'gpt2' is not supported; amqs supports bert, "
                                                    r"roberta, distilbert"):
        family_named("gpt2")
