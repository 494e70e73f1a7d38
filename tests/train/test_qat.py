from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from amqs.finetune import run as finetune
from amqs.quant import BitAssignment, QuantLinear, model_size
from amqs.train.qat import build_assignment, load_teacher, quantize_student, run_qat
from tests.conftest import compose_cfg


@pytest.fixture
def qat_cfg(tmp_path: Path, glue_dir: Path) -> DictConfig:
    overrides = ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}"]
    finetune(compose_cfg("finetune", overrides))  # the tiny teacher the student starts from
    return compose_cfg("qat", overrides + ["quant=w4a8"])


def test_uniform_assignment_covers_encoder_linears_and_embeddings(qat_cfg: DictConfig) -> None:
    teacher, _ = load_teacher(qat_cfg, 2)
    a = build_assignment(teacher, qat_cfg)
    linears = [n for n, m in a.modules.items() if m.kind == "linear"]
    assert len(linears) == 6 * 2 and len(a.modules) == 12 + 3
    assert all(set(m.bits) == {4} for n, m in a.modules.items() if m.kind == "linear")
    # 128 subgroups per matrix, or one per row when a matrix has fewer rows (64-row tiny matrices)
    assert a.modules["bert.encoder.layer.0.intermediate.dense"].num_subgroups == 128
    assert a.modules["bert.encoder.layer.0.output.dense"].num_subgroups == 64
    qat_cfg.quant.weight_bits, qat_cfg.quant.act_bits, qat_cfg.quant.emb_bits = 32, None, 32
    assert build_assignment(teacher, qat_cfg) is None


def test_student_is_a_quantized_copy(qat_cfg: DictConfig) -> None:
    teacher, _ = load_teacher(qat_cfg, 2)
    student, replaced = quantize_student(teacher, build_assignment(teacher, qat_cfg), qat_cfg)
    assert len(replaced) == 15 and not any(isinstance(m, QuantLinear) for m in teacher.modules())
    assert model_size(student).encoder_bytes < model_size(teacher).encoder_bytes / 6


@pytest.mark.slow
def test_run_qat_writes_run_dir_and_reuses(qat_cfg: DictConfig, tmp_path: Path) -> None:
    metrics = run_qat(qat_cfg, command="test")
    out = tmp_path / "runs" / "sst2-w4a8"
    assert json.loads((out / "metrics.json").read_text()) == metrics
    bits = BitAssignment.from_json(out / "bits.json")
    assert bits.meta["method"] == "w4a8" and metrics["replaced_modules"] == list(bits.modules)
    assert metrics["compression"] > 5 and metrics["search_val_accuracy"] is not None
    state = torch.load(out / "student.pt", weights_only=True)
    assert any(k.endswith("act_quant.running_max") for k in state)
    assert run_qat(qat_cfg) == metrics  # same config: reused, not retrained


def test_missing_teacher_says_how_to_make_one(tmp_path: Path, glue_dir: Path) -> None:
    cfg = compose_cfg("qat", ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}"])
    with pytest.raises(FileNotFoundError, match="amqs-finetune"):
        run_qat(cfg)
