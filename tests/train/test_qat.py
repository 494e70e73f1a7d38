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
    out = tmp_path / "runs" / "sst2-bert-tiny-w4a8"
    assert json.loads((out / "metrics.json").read_text()) == metrics
    bits = BitAssignment.from_json(out / "bits.json")
    assert bits.meta["method"] == "w4a8" and metrics["replaced_modules"] == list(bits.modules)
    assert metrics["compression"] > 5 and metrics["search_val_accuracy"] is not None
    state = torch.load(out / "student.pt", weights_only=True)
    assert any(k.endswith("act_quant.running_max") for k in state)
    assert run_qat(qat_cfg) == metrics  # same config: reused, not retrained


@pytest.mark.slow
def test_run_qat_records_its_dev_predictions(qat_cfg: DictConfig, tmp_path: Path) -> None:
    from amqs.data import load_glue
    from amqs.train.qat import PREDICTIONS_FILE

    metrics = run_qat(qat_cfg)
    record = json.loads((tmp_path / "runs" / "sst2-bert-tiny-w4a8" / PREDICTIONS_FILE).read_text())
    labels, preds = record["labels"], record["predictions"]
    assert record["split"] == "dev" and len(labels) == len(preds) == qat_cfg.data.max_dev_examples
    assert all(type(v) is int for v in labels + preds)
    assert labels == list(load_glue(qat_cfg.data)["dev"]["label"])  # dev order
    assert sum(p == y for p, y in zip(preds, labels)) / len(labels) == pytest.approx(metrics["dev_accuracy"], abs=1e-6)


def test_missing_teacher_says_how_to_make_one(tmp_path: Path, glue_dir: Path) -> None:
    cfg = compose_cfg("qat", ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}"])
    with pytest.raises(FileNotFoundError, match="amqs-finetune"):
        run_qat(cfg)


# --- init_from: a student that starts from a previous run's student.pt -------------------------------

def _finished_run(folder: Path, student: torch.nn.Module, assignment: BitAssignment) -> Path:
    folder.mkdir(parents=True)
    torch.save(student.state_dict(), folder / "student.pt")
    assignment.to_json(folder / "bits.json")
    (folder / "metrics.json").write_text(json.dumps({"config_hash": "prev"}))
    return folder


def test_init_from_loads_the_previous_weights_and_keeps_its_own_bits(tmp_path: Path) -> None:
    from amqs.quant import apply_assignment, init_lsq_step, uniform_assignment
    from amqs.train.qat import load_student_init
    from tests.tiny import batch, tiny_bert

    prev = tiny_bert(seed=1)
    a8 = uniform_assignment(prev, bits=8, num_subgroups=4, scheme="lsq", act_bits=8, embedding_bits=8)
    apply_assignment(prev, a8)
    prev.train()(**{k: v for k, v in batch(0).items() if k != "labels"})  # EMA activation ranges
    folder = _finished_run(tmp_path / "prev", prev, a8)

    student = tiny_bert(seed=0)
    kept = "bert.encoder.layer.0.attention.self.query"  # stays at 8 bits: its learned step is kept
    a4 = a8.with_bits({n: [4] * 4 for n, m in a8.modules.items() if m.kind == "linear" and n != kept})
    apply_assignment(student, a4)
    init = load_student_init(student, folder)
    ps, ss = prev.state_dict(), student.state_dict()
    weights = [k for k in ss if k.endswith(("weight", "bias"))]
    assert weights and all(torch.equal(ss[k], ps[k]) for k in weights)
    other = "bert.encoder.layer.1.output.dense"
    assert ss[f"{other}.bits"].tolist() == [4] * 4 and ss[f"{kept}.bits"].tolist() == [8] * 4
    assert torch.equal(ss[f"{kept}.step"], ps[f"{kept}.step"])
    assert f"{other}.step" in init["reinitialised"] and not torch.equal(ss[f"{other}.step"], ps[f"{other}.step"])
    q = student.get_submodule(other)
    # re-initialised from the loaded weights, not from the ones the student was built with
    assert torch.allclose(q.step, init_lsq_step(q.weight.reshape(4, -1), q.bits))
    for k in (f"{other}.act_quant.running_max", f"{other}.act_quant.initialized"):
        assert torch.equal(ss[k], ps[k])  # EMA ranges do not depend on the bit-width

    other_geometry = tiny_bert(intermediate_size=64)
    with pytest.raises(ValueError, match="does not fit this student.*shape"):
        load_student_init(other_geometry, folder)


def test_init_from_a_missing_or_unfinished_run_fails_clearly(tmp_path: Path) -> None:
    cfg = compose_cfg("qat", ["debug=smoke", f"paths.results_dir={tmp_path}", f"init_from={tmp_path}/runs/nope"])
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        run_qat(cfg)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "metrics.json").write_text("{}")
    cfg.init_from = str(tmp_path / "half")
    with pytest.raises(FileNotFoundError, match="not a finished run: student.pt missing"):
        run_qat(cfg)


@pytest.mark.slow
def test_student_init_builds_the_configured_geometry(qat_cfg: DictConfig) -> None:
    # AQ-BERT's reinit on the tiny model: a "random" source must take model.* sizes (128 positions here)
    metrics = run_qat(qat_cfg, command="test", student_init="random")
    assert metrics["student_init"] == "random" and metrics["replaced_modules"]
