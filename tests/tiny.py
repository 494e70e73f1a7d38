"""Tiny random BERTs (and RoBERTas, DistilBERTs) and batches shared by the tests (no download, milliseconds per
forward)."""


from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    PreTrainedModel,
    RobertaConfig,
    RobertaForSequenceClassification,
)

TINY = dict(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=64)
# all-MiniLM-L6-v2's geometry, randomly initialised (no download); a small vocabulary keeps it fast.
MINILM = dict(vocab_size=100, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
              max_position_embeddings=64)


def tiny_bert(seed: int = 0, dropout: float = 0.0, **overrides: int) -> BertForSequenceClassification:
    """The tiny test BERT (H=64, 2 layers, 4 heads, FFN 128); dropout off so losses are deterministic."""
    torch.manual_seed(seed)
    cfg = BertConfig(**{**TINY, **overrides}, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return BertForSequenceClassification(cfg)


FAMILIES = ("bert", "roberta", "distilbert")


def tiny_model(model_type: str = "bert", seed: int = 0, dropout: float = 0.0, **overrides: int) -> PreTrainedModel:
    """The tiny test model of a family (the tiny BERT's sizes; RoBERTa: one token type, positions from pad id 1)."""
    if model_type == "bert":
        return tiny_bert(seed, dropout, **overrides)
    torch.manual_seed(seed)
    sizes = {**TINY, **overrides}
    if model_type == "roberta":
        sizes["max_position_embeddings"] += 2  # positions start after the padding id (1)
        return RobertaForSequenceClassification(RobertaConfig(
            **sizes, type_vocab_size=1, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout))
    assert model_type == "distilbert", model_type
    return DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=sizes["vocab_size"], dim=sizes["hidden_size"], n_layers=sizes["num_hidden_layers"],
        n_heads=sizes["num_attention_heads"], hidden_dim=sizes["intermediate_size"],
        max_position_embeddings=sizes["max_position_embeddings"], dropout=dropout, attention_dropout=dropout,
        seq_classif_dropout=dropout))


def batch(seed: int, n: int = 4, length: int = 8) -> dict[str, torch.Tensor]:
    """A random classification batch for the tiny BERT."""
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(0, TINY["vocab_size"], (n, length), generator=g),
        "attention_mask": torch.ones(n, length, dtype=torch.long),
        "labels": torch.randint(0, 2, (n,), generator=g),
    }
