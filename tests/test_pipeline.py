"""amqs-pipeline end to end on the tiny BERT (and RoBERTa, DistilBERT), and the teacher it picks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amqs.models.family import family_named
from amqs.pipeline import run as pipeline
from amqs.predict import predict_file
from amqs.train.qat import resolve_teacher
from tests.conftest import compose_cfg


def _cfg(tmp_path: Path, glue_dir: Path, *more: str):
    return compose_cfg("pipeline", ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}",
                                    "pipeline.bench_rounds=2", "pipeline.bench_warmup=1", "pipeline.bench_shapes=[1x16]",
                                    "train.num_threads=1", *more])


@pytest.mark.slow
def test_pipeline_makes_teacher_search_export_bench_and_report(tmp_path: Path, glue_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQS_SHARED_DIR", str(tmp_path / "no-shared"))
    state = pipeline(_cfg(tmp_path, glue_dir), command="test")
    assert state["teacher"]["fine_tuned_here"] and state["teacher"]["source"].endswith("bert-tiny-sst2-heldout/model")
    assert set(state["seconds"]) == {"teacher", "search", "export", "bench"}
    s, e = state["search"], state["export"]
    assert s["compression"] == pytest.approx(13.0, rel=0.06)
    # the export is the retrained model: same predictions on dev, its packed bytes on disk
    assert e["dev_accuracy_exported"] == e["dev_accuracy_fakequant"] == s["dev_accuracy"]
    assert Path(e["dir"], "model.onnx").stat().st_size == e["file_bytes"]
    models = {r["model"] for r in state["bench"]}
    assert models == {"pytorch-fp32", "ort-fp32", "ort-int8-dynamic", "searched"}
    report = (tmp_path / "REPORT.md").read_text()
    assert f"**{s['compression']:.2f}x**" in report and "ort-int8-dynamic" in report
    assert (tmp_path / "bits.png").stat().st_size > 0
    assert json.loads((tmp_path / "pipeline.json").read_text())["search"] == s
    again = pipeline(_cfg(tmp_path, glue_dir), command="test")  # resumes: the teacher and the run are reused
    assert not again["teacher"]["fine_tuned_here"] and again["search"] == s


def test_auto_teacher_prefers_the_shared_held_out_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose_cfg("pipeline", [f"paths.results_dir={tmp_path / 'out'}"])
    assert cfg.teacher.source == "auto"
    monkeypatch.setenv("AMQS_SHARED_DIR", str(tmp_path / "shared"))
    with pytest.raises(FileNotFoundError, match="teacher=auto found no teacher for minilm-l6 on sst2"):
        resolve_teacher(cfg)
    for folder in ("shared/models/minilm-l6-sst2", "out/teachers/minilm-l6-sst2-heldout/model",
                   "shared/models/minilm-l6-sst2-heldout"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "config.json").write_text("{}")
        assert resolve_teacher(cfg) == str(tmp_path / folder if "shared" in folder else
                                           tmp_path / "shared/models/minilm-l6-sst2")


def test_pipeline_refuses_a_study(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="runs one search"):
        pipeline(compose_cfg("pipeline", ["outer=optuna", f"paths.results_dir={tmp_path}"]))


def test_the_quickstart_composes_as_the_readme_runs_it() -> None:
    """README line 1: `amqs-pipeline experiment=quickstart` (its own folder, the auto teacher, small slices)."""
    cfg = compose_cfg("pipeline", ["experiment=quickstart"])
    assert cfg.paths.results_dir == "outputs/quickstart" and cfg.teacher.source == "auto" and not cfg.smoke
    assert (cfg.budget.kind, cfg.budget.value, cfg.data.max_train_examples) == ("compression", 8.0, 2000)
    assert cfg.name == "sst2-minilm-l6-quickstart-compression8.0" and cfg.pipeline.export and cfg.pipeline.bench
    assert compose_cfg("pipeline", ["experiment=quickstart", "data=mrpc"]).name.startswith("mrpc-")


@pytest.mark.slow
@pytest.mark.parametrize("model,model_type", [("roberta_tiny", "roberta"), ("distilbert_tiny", "distilbert")])
def test_roberta_and_distilbert_fine_tune_search_export_and_predict(model: str, model_type: str, tmp_path: Path,
                                                                    glue_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline on the other families: a structured search (heads tied over Q/K/V), a retrain with hidden-state
    distillation from the lkd start, the export (parity on dev), the benchmark, then amqs-predict on the export."""
    monkeypatch.setenv("AMQS_SHARED_DIR", str(tmp_path / "no-shared"))
    cfg = _cfg(tmp_path, glue_dir, f"model={model}", "search.space=structured", "distill=hidden", "train.init=lkd",
               "train.reconstruct.batches=2")
    state = pipeline(cfg, command="test")
    s, e = state["search"], state["export"]
    assert state["teacher"]["source"].endswith(f"{model_type}-tiny-sst2-heldout/model")
    assert s["compression"] == pytest.approx(13.0, rel=0.06)
    retrain = tmp_path / "runs" / cfg.name / "retrain"
    assert json.loads((retrain / "metrics.json").read_text())["init"] == "lkd"
    assert len(json.loads((retrain / "reconstruct.json").read_text())["blocks"]) == 2
    assert e["dev_accuracy_exported"] == e["dev_accuracy_fakequant"] == s["dev_accuracy"]
    config = json.loads(Path(e["dir"], "config.json").read_text())
    assert config["model_type"] == model_type and config["architectures"] == [family_named(model_type).classifier_class]
    assert len(config["amqs"]["num_attention_heads"]) == 2
    assert {r["model"] for r in state["bench"]} == {"pytorch-fp32", "ort-fp32", "ort-int8-dynamic", "searched"}
    bits = json.loads(Path(e["dir"], "bits.json").read_text())
    assert sum(name.startswith(family_named(model_type).encoder + ".") for name in bits["modules"]) == 12
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\na gripping , funny film\t1\ndull and lifeless\t0\n")
    result = predict_file(Path(e["dir"]), dev, tmp_path / "predictions.tsv")
    assert result["examples"] == 2 and 0.0 <= result["accuracy"] <= 1.0
