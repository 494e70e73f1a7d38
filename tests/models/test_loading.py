from __future__ import annotations

from pathlib import Path

import pytest
import torch

from amqs.config import ModelConfig
from amqs.models import load_classifier, resolve_source


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
