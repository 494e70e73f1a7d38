"""Tiny random BERTs and batches shared by the tests (no download, milliseconds per forward)."""


from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification

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


def batch(seed: int, n: int = 4, length: int = 8) -> dict[str, torch.Tensor]:
    """A random classification batch for the tiny BERT."""
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(0, TINY["vocab_size"], (n, length), generator=g),
        "attention_mask": torch.ones(n, length, dtype=torch.long),
        "labels": torch.randint(0, 2, (n,), generator=g),
    }
