"""Staged recipes (progressive, BinaryBERT): stage configs, stage-to-stage initialisation, end to end."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

import amqs.train.qat as qat
from amqs.finetune import run as finetune
from amqs.qat import run as qat_app
from amqs.quant import BitAssignment
from amqs.quant.split import TwinQuantLinear
from amqs.train.staged import stage_configs
from tests.conftest import compose_cfg


def test_progressive_stages_lower_weights_then_quantize_activations(tmp_path: Path) -> None:
    cfg = compose_cfg("qat", ["recipe=progressive", f"paths.results_dir={tmp_path}"])
    stages = stage_configs(cfg)
    assert [c.name for c in stages] == ["sst2-minilm-l6-progressive/1-w8", "sst2-minilm-l6-progressive/2-w4",
                                        "sst2-minilm-l6-progressive/3-w2", "sst2-minilm-l6-progressive"]
    assert [(c.quant.weight_bits, c.quant.act_bits) for c in stages] == [(8, 32), (4, 32), (2, 32), (2, 8)]
    assert [c.init_from for c in stages] == [None] + [str(tmp_path / "runs" / c.name) for c in stages[:-1]]
    assert [c.train.epochs for c in stages] == [0.25] * 4  # the budget of one run, shared
    assert [c.train.seed for c in stages] == [42, 43, 44, 45]
    assert all(c.staged is None for c in stages) and stages[0].quant.name == "progressive-w8"
    cfg.staged.split_budget = False
    assert [c.train.epochs for c in stage_configs(cfg)] == [1.0] * 4


def test_binarybert_stages() -> None:
    stages = stage_configs(compose_cfg("qat", ["recipe=binarybert"]))
    assert [(c.name, c.quant.weight_bits, c.quant.tws) for c in stages] == [
        ("sst2-minilm-l6-binarybert/1-ternary", 2, False), ("sst2-minilm-l6-binarybert", 1, True)]
    assert stages[1].init_from == "outputs/runs/sst2-minilm-l6-binarybert/1-ternary"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory, glue_dir: Path) -> Path:
    """The tiny smoke teacher, fine-tuned once for this module."""
    root = tmp_path_factory.mktemp("teacher")
    finetune(compose_cfg("finetune", ["debug=smoke", f"paths.results_dir={root}", f"data.glue_dir={glue_dir}"]))
    return root / "teachers" / "bert-tiny-sst2" / "model"


def _cfg(recipe: str, root: Path, teacher: Path, glue_dir: Path, *extra: str) -> DictConfig:
    return compose_cfg("qat", [f"recipe={recipe}", "debug=smoke", f"paths.results_dir={root}",
                               f"data.glue_dir={glue_dir}", f"teacher.source={teacher}", "data.max_train_examples=64",
                               "data.max_dev_examples=32", "data.max_search_val_examples=32", *extra])


@pytest.fixture
def snapshots(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[torch.nn.Module, torch.nn.Module]]:
    """Every QAT run's student as it enters and as it leaves training, by run name."""
    seen: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}
    real_fit = qat.fit

    def spy(student, loader, train_cfg, **kw):
        before = copy.deepcopy(student)
        result = real_fit(student, loader, train_cfg, **kw)
        seen[Path(kw["ckpt_dir"]).parent.name] = (before, copy.deepcopy(student))
        return result

    monkeypatch.setattr(qat, "fit", spy)
    return seen


@pytest.mark.slow
def test_progressive_end_to_end_each_stage_starts_from_the_last(tmp_path: Path, teacher: Path, glue_dir: Path,
                                                                 snapshots: dict) -> None:
    cfg = _cfg("progressive", tmp_path, teacher, glue_dir)
    metrics = qat_app(cfg, command="test")
    assert [s["method"] for s in metrics["stages"]] == ["progressive-w8", "progressive-w4", "progressive-w2",
                                                        "progressive"]
    assert metrics["method"] == "progressive" and metrics["weight_bits"] == 2 and metrics["act_bits"] == 8
    assert metrics["epochs"] == pytest.approx(1.0)
    assert metrics["train_examples"] == sum(s["train_examples"] for s in metrics["stages"])
    order = ["1-w8", "2-w4", "3-w2", "sst2-bert-tiny-progressive"]
    for prev, nxt in zip(order, order[1:]):
        trained, start = snapshots[prev][1].state_dict(), snapshots[nxt][0].state_dict()
        weights = [k for k in start if k.endswith(("weight", "bias"))]
        assert all(torch.equal(start[k], trained[k]) for k in weights), (prev, nxt)
    assert snapshots["1-w8"][0].state_dict()["bert.encoder.layer.0.output.dense.bits"].unique().tolist() == [8]
    out = tmp_path / "runs" / "sst2-bert-tiny-progressive"
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert BitAssignment.from_json(out / "bits.json").act_bits == 8
    assert BitAssignment.from_json(out / "2-w4" / "bits.json").act_bits == 32
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "baselines.csv").open())}
    assert float(rows["progressive"]["epochs"]) == pytest.approx(1.0)
    snapshots.clear()
    assert qat_app(cfg) == metrics and not snapshots  # every finished stage is reused, nothing retrains


@pytest.mark.slow
def test_binarybert_end_to_end_split_is_equivalent(tmp_path: Path, teacher: Path, glue_dir: Path,
                                                   snapshots: dict) -> None:
    metrics = qat_app(_cfg("binarybert", tmp_path, teacher, glue_dir), command="test")
    ternary, binary = snapshots["1-ternary"][1].eval(), snapshots["sst2-bert-tiny-binarybert"][0].eval()
    assert isinstance(binary.get_submodule("bert.encoder.layer.0.intermediate.dense"), TwinQuantLinear)
    ids = torch.randint(0, 1000, (4, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(binary(input_ids=ids).logits, ternary(input_ids=ids).logits, atol=1e-5)
    stages = metrics["stages"]
    assert stages[1]["dev_accuracy_ptq"] == stages[0]["dev_accuracy"]  # the split loses nothing
    assert metrics["weight_bits"] == 1 and stages[0]["weight_bits"] == 2
    assert stages[1]["encoder_bytes"] == stages[0]["encoder_bytes"]  # 1 bit x 2 in = 2 bits x in
    assert metrics["compression"] > 10  # against the teacher's fp32 encoder, not the twice-as-wide one


@pytest.mark.slow
def test_qbert_end_to_end_meets_the_budget(tmp_path: Path, teacher: Path, glue_dir: Path) -> None:
    cfg = _cfg("qbert", tmp_path, teacher, glue_dir, "budget.kind=avg_bits", "budget.value=5",
               "mixed.batches=2", "mixed.probes=1")
    metrics = qat_app(cfg, command="test")
    out = tmp_path / "runs" / "sst2-bert-tiny-qbert-avg_bits5.0"
    bits = BitAssignment.from_json(out / "bits.json")
    assert metrics["method"] == "qbert-avg_bits5.0" and metrics["unit_bits"] == bits.meta["unit_bits"]
    assert metrics["encoder_bytes"] == bits.meta["encoder_bytes"] <= bits.meta["target_bytes"]
    sens = bits.meta["sensitivity"]["per_unit"]
    assert set(sens) == {"bert.encoder.layer.0", "bert.encoder.layer.1"}
    top = max(sens, key=sens.get)
    assert bits.meta["unit_bits"][top] == max(bits.meta["unit_bits"].values())
