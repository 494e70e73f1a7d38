"""amqs.train.metrics: macro-F1 against scikit-learn's, on many classes and on GLUE's two."""

from __future__ import annotations

import pytest
import torch

from amqs.train.metrics import METRICS, f1_binary, f1_macro

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("classes,seed", [(2, 0), (3, 1), (7, 2)])
def test_macro_f1_matches_sklearn(classes: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (200,), generator=g)
    preds = torch.where(torch.rand(200, generator=g) < 0.6, labels, torch.randint(0, classes, (200,), generator=g))
    want = sklearn_metrics.f1_score(labels.numpy(), preds.numpy(), average="macro")
    assert f1_macro(preds, labels) == pytest.approx(want, abs=1e-12)


def test_a_class_never_predicted_counts_zero_and_binary_f1_is_unchanged() -> None:
    labels, preds = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 1])
    assert f1_macro(preds, labels) == pytest.approx((1 + 0.5 + 0) / 3)
    assert METRICS["f1"] is f1_binary and METRICS["macro_f1"] is f1_macro
