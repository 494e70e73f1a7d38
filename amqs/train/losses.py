"""The task-loss signature every training, search and sensitivity step takes, and its default.

A loss is ``loss_fn(model, batch) -> scalar``: the model and a batch dict of tensors in,
the loss out (e.g. :class:`amqs.train.distill.DistillLoss`, or AQ-BERT's search objective).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

LossFn = Callable[[nn.Module, dict[str, Tensor]], Tensor]


def ce_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """The task loss of an HF classifier (cross-entropy when ``labels`` are in the batch).

    Example:
        >>> import torch
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> m = BertForSequenceClassification(BertConfig(hidden_size=8, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=16, vocab_size=20))
        >>> ce_loss(m, {"input_ids": torch.tensor([[1, 2]]), "labels": torch.tensor([0])}).ndim
        0
    """
    return model(**batch).loss


__all__ = ["LossFn", "ce_loss"]
