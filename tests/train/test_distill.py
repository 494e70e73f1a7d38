from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification

from amqs.config import DistillConfig
from amqs.train.distill import DistillLoss


def _model(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg)


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 50, (4, 7))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1, 0])}


def test_identical_student_and_teacher_adds_nothing_to_ce() -> None:
    teacher = _model(0)
    student = copy.deepcopy(teacher)
    batch = _batch()
    loss = DistillLoss(teacher, DistillConfig(kd_weight=1.0, hidden_weight=1.0))(student, batch)
    ce = student(**batch).loss
    torch.testing.assert_close(loss, ce, atol=1e-6, rtol=0)


def test_kd_term_matches_reference_and_trains_student_only() -> None:
    teacher, student = _model(0), _model(1)
    batch = _batch()
    cfg = DistillConfig(ce_weight=0.0, kd_weight=1.0, temperature=2.0)
    loss = DistillLoss(teacher, cfg)(student, batch)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    s, t = student(**inputs).logits, teacher(**inputs).logits
    p_t = F.softmax(t / 2, -1)
    ref = 4 * (p_t * (p_t.log() - F.log_softmax(s / 2, -1))).sum(-1).mean()
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-4)
    loss.backward()
    assert student.classifier.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_hidden_term_positive_for_different_models() -> None:
    loss_fn = DistillLoss(_model(0), DistillConfig(ce_weight=0.0, kd_weight=0.0, hidden_weight=1.0))
    assert loss_fn(_model(1), _batch()).item() > 0


def test_distillation_without_teacher_fails() -> None:
    with pytest.raises(ValueError, match="no teacher"):
        DistillLoss(None, DistillConfig(kd_weight=1.0))
