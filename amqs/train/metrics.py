"""Task metrics and batched evaluation.

Example::

    metrics = evaluate(model, dev_loader, ("accuracy", "f1", "macro_f1"))  # {"accuracy": 0.89, "f1": 0.91, ...}
    metrics, record = evaluate_with_predictions(model, dev_loader, ("accuracy",), split="dev")
    # record = {"split": "dev", "labels": [1, 0, ...], "predictions": [1, 1, ...]}: a QAT run's dev_predictions.json
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader


def accuracy(preds: torch.Tensor, labels: torch.Tensor) -> float:
    return (preds == labels).float().mean().item()


def f1_binary(preds: torch.Tensor, labels: torch.Tensor, positive: int = 1) -> float:
    """F1 of the positive class (GLUE's MRPC metric)."""
    tp = ((preds == positive) & (labels == positive)).sum().item()
    fp = ((preds == positive) & (labels != positive)).sum().item()
    fn = ((preds != positive) & (labels == positive)).sum().item()
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def f1_macro(preds: torch.Tensor, labels: torch.Tensor) -> float:
    """The mean over classes of each class's F1 (classes seen in ``labels`` or ``preds``): every class counts the
    same however rare, the metric of imbalanced or many-class data.

    Example:
        >>> f1_macro(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2, 1]))  # F1s 1, 2/3, 2/3
        0.7777777777777777
    """
    classes = torch.unique(torch.cat([preds, labels])).tolist()
    return sum(f1_binary(preds, labels, positive=c) for c in classes) / len(classes) if classes else 0.0


METRICS = {"accuracy": accuracy, "f1": f1_binary, "macro_f1": f1_macro}


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """All logits and labels of ``loader`` (model put in eval mode)."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        labels.append(batch.pop("labels").cpu())
        logits.append(model(**batch).logits.float().cpu())
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module, loader: DataLoader, metrics: Iterable[str], device: str = "cpu") -> dict[str, float]:
    """The named metrics of ``model`` on ``loader``, plus ``examples``."""
    return evaluate_with_predictions(model, loader, metrics, device)[0]


def evaluate_with_predictions(model: nn.Module, loader: DataLoader, metrics: Iterable[str], device: str = "cpu",
                              split: str = "dev") -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`evaluate`'s metrics, and the per-example record ``{"split", "labels", "predictions"}`` (ints, in
    ``loader``'s order): what a paired comparison of two models on the same examples needs
    (:mod:`amqs.report.compare`).

    Example::

        scores, record = evaluate_with_predictions(student, dev_loader, ("accuracy",))
        right = sum(p == y for p, y in zip(record["predictions"], record["labels"]))
        right / len(record["labels"])   # == scores["accuracy"], up to float32 rounding
    """
    logits, labels = predict(model, loader, device)
    preds = logits.argmax(-1)
    out = {name: METRICS[name](preds, labels) for name in metrics}
    out["examples"] = len(labels)
    return out, {"split": split, "labels": labels.tolist(), "predictions": preds.tolist()}
