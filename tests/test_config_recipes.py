"""The literature's recipes (conf/recipe/) compose with one override and build the right student."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import ConfigCompositionException

from amqs.quant import QuantEmbedding, QuantLinear, quantized_modules
from amqs.quant.split import TwinQuantLinear, split_ternary_linears
from amqs.train.qat import build_assignment, check_recipe, quantize_student
from tests.conftest import compose_cfg
from tests.tiny import tiny_bert

QAT_RECIPES = ["q8bert", "qbert", "ternarybert", "binarybert", "kdlsq", "progressive"]
ENCODER = "bert.encoder.layer.0.intermediate.dense"  # 128 rows in the tiny BERT
WORD = "bert.embeddings.word_embeddings"

# recipe -> (method, weight scheme, weight bits, subgroups of ENCODER, act bits, act kind, word emb bits,
#            word emb subgroups (0: one per row), position table quantized, distill hidden weight)
EXPECTED = {
    "q8bert": ("q8bert", "symmetric", 8, 1, 8, "ema-sym", 8, 1, True, 0.0),
    "qbert": ("qbert-compression13.0", "minmax", 8, 128, 8, "ema", 8, 1, True, 0.0),
    "ternarybert": ("ternarybert", "twn", 2, 1, 8, "ema-sym", 2, 0, False, 1.0),
    "binarybert": ("binarybert", "twn", 2, 1, 8, "ema-sym", 2, 0, False, 1.0),  # 2 until the TWS split
    "kdlsq": ("kdlsq", "lsq", 4, 1, 4, "lsq", 8, 1, True, 1.0),
    "progressive": ("progressive", "minmax", 2, 128, 8, "ema", 8, 1, True, 0.0),
}


@pytest.mark.parametrize("recipe", QAT_RECIPES)
def test_recipe_builds_its_student(recipe: str) -> None:
    cfg = compose_cfg("qat", [f"recipe={recipe}", "debug=smoke"])
    method, scheme, bits, groups, act, act_kind, emb_bits, emb_groups, position, hidden = EXPECTED[recipe]
    assert cfg.quant.name == method and cfg.name == f"sst2-bert-tiny-{method}"
    assert cfg.distill.hidden_weight == hidden
    model = tiny_bert(vocab_size=30522)
    a = build_assignment(model, cfg)
    student, _ = quantize_student(model, a, cfg)
    q = student.get_submodule(ENCODER)
    assert isinstance(q, QuantLinear) and q.scheme == scheme
    assert q.bits.unique().tolist() == [bits] and q.num_subgroups == groups
    aq = q.act_quant
    assert aq.bits == act and {"ema": (False, False), "ema-sym": (True, False), "lsq": (True, True)}[act_kind] == (
        aq.symmetric, aq.lsq)
    emb = student.get_submodule(WORD)
    assert isinstance(emb, QuantEmbedding) and emb.bits.unique().tolist() == [emb_bits]
    assert emb.num_subgroups == (30522 if emb_groups == 0 else emb_groups)
    assert isinstance(student.get_submodule("bert.embeddings.position_embeddings"), QuantEmbedding) == position
    assert not any(isinstance(m, QuantLinear) for m in model.modules())  # the teacher is untouched
    if recipe == "binarybert":
        assert cfg.quant.tws and cfg.quant.weight_bits == 1
        split_ternary_linears(student)
        q = student.get_submodule(ENCODER)
        assert isinstance(q, TwinQuantLinear) and q.bits.unique().tolist() == [1]
    if recipe == "qbert":
        assert cfg.mixed.sensitivity == "hessian" and list(cfg.mixed.choices) == [2, 4, 8]
        assert (cfg.budget.kind, cfg.budget.value) == ("compression", 13.0)
    if recipe in ("binarybert", "progressive"):
        assert cfg.staged.stages and cfg.staged.split_budget
    else:
        assert cfg.staged is None


def test_q8bert_weights_are_per_tensor_symmetric_int8() -> None:
    cfg = compose_cfg("qat", ["recipe=q8bert", "debug=smoke"])
    model = tiny_bert(vocab_size=30522)
    student, _ = quantize_student(model, build_assignment(model, cfg), cfg)
    w = model.get_submodule(ENCODER).weight
    scale = w.abs().max() / 127
    expected = torch.round(w / scale).clamp(-127, 127) * scale
    assert torch.allclose(student.get_submodule(ENCODER).quantized_weight(), expected, atol=1e-7)
    assert len(quantized_modules(student)) == 12 + 3


def test_aqbert_is_one_search_override() -> None:
    cfg = compose_cfg("search", ["recipe=aqbert"])
    assert cfg.search.space == "aqbert" and cfg.search.arch.optimizer == "sgd" and cfg.search.arch.lr == 0.1
    assert cfg.search.arch.unrolled and cfg.reinit and cfg.search.init_bias == 0.0
    assert cfg.name == "sst2-minilm-l6-recipe-aqbert-compression13.0"
    assert compose_cfg("search", ["recipe=aqbert", "budget=c16_2"]).budget.value == 16.2


@pytest.mark.parametrize("app, recipe, match", [
    ("qat", "aqbert", "search"),            # a search preset
    ("search", "q8bert", "mixed"),          # QAT recipes are not search presets
    ("search", "binarybert", "mixed"),
])
def test_a_recipe_of_the_other_app_fails_at_compose_time(app: str, recipe: str, match: str) -> None:
    with pytest.raises(ConfigCompositionException, match=match):
        compose_cfg(app, [f"recipe={recipe}"])


def test_unknown_keys_in_recipe_groups_still_fail() -> None:
    with pytest.raises(ConfigCompositionException, match="sensitivty"):
        compose_cfg("qat", ["recipe=qbert", "mixed.sensitivty=fisher"])
    with pytest.raises(ConfigCompositionException, match="bitz"):
        compose_cfg("qat", ["recipe=progressive", "staged.stages.0.bitz=4"])


@pytest.mark.parametrize("overrides, match", [
    (["recipe=qbert", "~budget"], "needs a size budget"),
    (["budget=c13"], "only used by a mixed-precision allocation"),
    (["recipe=binarybert", "quant.weight_bits=2"], "needs quant.weight_bits=1"),
])
def test_mismatched_recipe_settings_fail_before_any_work(overrides: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_recipe(compose_cfg("qat", overrides))
