from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from transformers import (
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    GPT2Config,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from amqs.config import ModelConfig
from amqs.models import load_classifier, load_tokenizer, resolve_source
from amqs.models.family import UnsupportedModelError


def test_random_tiny_bert_has_configured_shape() -> None:
    model, tok = load_classifier(ModelConfig(source="random", hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64), num_labels=2)
    assert model.config.hidden_size == 32 and len(model.bert.encoder.layer) == 1
    out = model(**tok(["hello world"], return_tensors="pt"))
    assert out.logits.shape == (1, 2)


def test_embedded_minilm_is_the_default_and_loads_offline() -> None:
    model, tok = load_classifier(ModelConfig(), num_labels=2)
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (6, 384, 12, 1536)
    with torch.no_grad():
        logits = model(**tok(["a fine film"], return_tensors="pt")).logits
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()


def test_local_folder_round_trip(tmp_path: Path) -> None:
    model, tok = load_classifier(ModelConfig(source="random", hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64), num_labels=2)
    assert model.config.vocab_size == len(tok) and model.config.max_position_embeddings == 512  # defaults
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, _ = load_classifier(ModelConfig(source=str(tmp_path)), num_labels=2)
    assert torch.equal(again.classifier.weight, model.classifier.weight)


def test_bad_sources_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown embedded model 'bert'"):
        resolve_source("embedded:bert")
    with pytest.raises((OSError, FileNotFoundError)):
        load_classifier(ModelConfig(source=str(tmp_path / "missing")), num_labels=2)
    with pytest.raises(ValueError, match="model.source=random needs the architecture: set model.hidden_size"):
        load_classifier(ModelConfig(source="random"), num_labels=2)


def test_pretrained_models_show_no_made_up_architecture() -> None:
    """`--cfg job` of a MiniLM run must not show the tiny test model's sizes: they are null unless random."""
    from tests.conftest import compose_cfg

    model = compose_cfg("finetune", []).model
    assert model.source == "embedded:minilm" and model.hidden_size is None and model.num_hidden_layers is None
    tiny = compose_cfg("finetune", ["debug=smoke"]).model
    assert (tiny.hidden_size, tiny.num_hidden_layers, tiny.num_attention_heads) == (64, 2, 4)


# --- the BERT family (amqs.models.family) ---------------------------------------------------------------------
FAMILY_CONFIGS = {
    "roberta": lambda **kw: RobertaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                          intermediate_size=64, type_vocab_size=1, **kw),
    "distilbert": lambda **kw: DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=4, hidden_dim=64, **kw),
}
CLASSES = {"roberta": RobertaForSequenceClassification, "distilbert": DistilBertForSequenceClassification}


def _save(folder: Path, model: torch.nn.Module) -> Path:
    """An HF folder: ``model`` and the embedded MiniLM's tokenizer."""
    model.save_pretrained(folder)
    load_tokenizer("embedded:minilm").save_pretrained(folder)
    return folder


@pytest.mark.parametrize("model_type", ["roberta", "distilbert"])
def test_roberta_and_distilbert_folders_load_as_their_classes(model_type: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    saved = CLASSES[model_type](FAMILY_CONFIGS[model_type](num_labels=2))
    model, tok = load_classifier(ModelConfig(source=str(_save(tmp_path, saved))), num_labels=2)
    assert type(model) is CLASSES[model_type]
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.state_dict().items())
    enc = tok(["a fine film"], ["and a pair"], return_tensors="pt")
    assert "token_type_ids" not in enc  # neither reads token types (RoBERTa has one, DistilBERT none)
    assert model(**enc).logits.shape == (1, 2)


@pytest.mark.parametrize("model_type", ["roberta", "distilbert"])
def test_random_family_models_are_their_classes(model_type: str) -> None:
    cfg = ModelConfig(source="random", model_type=model_type, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=64, max_position_embeddings=40)
    model, tok = load_classifier(cfg, num_labels=3)
    assert type(model) is CLASSES[model_type] and model.config.num_hidden_layers == 2
    enc = tok(["word " * 60], truncation=True, max_length=40, return_tensors="pt")
    assert model(**enc).logits.shape == (1, 3)  # 40 tokens fit (RoBERTa's positions start after the pad id)


@pytest.mark.parametrize("config", [ElectraConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                                  num_attention_heads=4, intermediate_size=64, embedding_size=32),
                                    GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=4)])
def test_other_model_types_are_refused_with_the_supported_list(config, tmp_path: Path) -> None:
    config.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match=f"model_type '{config.model_type}' is not supported; amqs "
                                                    "supports bert, roberta, distilbert"):
        load_classifier(ModelConfig(source=str(tmp_path)), num_labels=2)
    with pytest.raises(UnsupportedModelError, match="supports bert, roberta, distilbert"):
        load_classifier(ModelConfig(source="random", model_type="electra", hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=4, intermediate_size=64), num_labels=2)


@pytest.mark.parametrize("model_type,head", [("roberta", "classifier.out_proj"), ("distilbert", "classifier")])
def test_a_head_of_another_label_count_is_reinitialised_with_a_warning(model_type: str, head: str, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    saved = CLASSES[model_type](FAMILY_CONFIGS[model_type](num_labels=2))
    folder = _save(tmp_path, saved)
    with caplog.at_level(logging.WARNING, logger="amqs.models.loading"):
        model, _ = load_classifier(ModelConfig(source=str(folder)), num_labels=3)
    assert model.get_submodule(head).out_features == 3 and model.config.num_labels == 3
    warned = [r.getMessage() for r in caplog.records if r.name == "amqs.models.loading"]
    assert len(warned) == 1 and f"classification head ({head})" in warned[0] and "3 labels" in warned[0]
    # the encoder is the checkpoint's
    base = saved.base_model_prefix
    assert torch.equal(model.get_submodule(base).embeddings.word_embeddings.weight,
                       saved.get_submodule(base).embeddings.word_embeddings.weight)


def test_bert_checkpoint_with_another_head_warns_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model, tok = load_classifier(ModelConfig(source="random", hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64), num_labels=2)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="amqs.models.loading"):
        again, tok = load_classifier(ModelConfig(source=str(tmp_path)), num_labels=4)
    assert again.classifier.out_features == 4 and "classification head (classifier)" in caplog.text
    assert "token_type_ids" in tok(["a"], ["b"])  # BERT reads token types


def test_model_type_must_match_the_checkpoint(tmp_path: Path) -> None:
    _save(tmp_path, DistilBertForSequenceClassification(FAMILY_CONFIGS["distilbert"]()))
    with pytest.raises(ValueError, match="model.model_type=roberta but .* holds a distilbert"):
        load_classifier(ModelConfig(source=str(tmp_path), model_type="roberta"), num_labels=2)
