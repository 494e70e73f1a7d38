from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import DictConfig

import amqs.search.run as search_run
from amqs.finetune import run as finetune
from amqs.quant import BitAssignment
from amqs.search.app import run as search_app
from tests.conftest import compose_cfg


@pytest.fixture
def search_cfg(tmp_path: Path, glue_dir: Path) -> DictConfig:
    overrides = ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}"]
    finetune(compose_cfg("finetune", overrides))  # the tiny teacher
    return compose_cfg("search", overrides)


@pytest.mark.slow
def test_search_derive_retrain_end_to_end(search_cfg: DictConfig, tmp_path: Path) -> None:
    metrics = search_app(search_cfg, command="test")
    out = tmp_path / "runs" / search_cfg.name
    bits = BitAssignment.from_json(out / "bits.json")
    assert abs(bits.meta["encoder_bytes"] - bits.meta["target_bytes"]) <= 0.05 * bits.meta["target_bytes"]
    # The retrained model's measured size is the derived assignment's size, to the byte.
    assert metrics["encoder_bytes"] == bits.meta["encoder_bytes"] == metrics["derived_encoder_bytes"]
    assert metrics["compression"] == pytest.approx(13.0, rel=0.06)
    log = [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines()]
    assert {"epoch", "tau", "train_loss", "expected_bytes", "argmax_bytes", "arch_entropy"} <= set(log[-1])
    assert log[0]["tau"] > log[-1]["tau"]  # annealed
    assert (out / "retrain" / "metrics.json").exists() and not (out / "checkpoint").exists()
    rows = list(csv.DictReader((tmp_path / "search.csv").open()))
    assert rows[0]["space"] == "default" and rows[0]["distill"] == "logits" and float(rows[0]["budget_compression"]) == pytest.approx(13.0)
    assert search_app(search_cfg) == metrics  # a finished run is reused


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_killed_search_resumes_to_the_same_assignment(search_cfg: DictConfig, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    search_cfg.train.checkpoint_every = 3
    search_cfg.search.arch.warmup_epochs = 0.0
    reference = search_run.search(search_cfg, _fresh(tmp_path / "a"))

    real_step, calls = search_run.search_step, {"n": 0}

    def dies_at_step_7(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise _Killed
        return real_step(*args, **kwargs)

    out = _fresh(tmp_path / "b")
    monkeypatch.setattr(search_run, "search_step", dies_at_step_7)
    with pytest.raises(_Killed):
        search_run.search(search_cfg, out)
    monkeypatch.setattr(search_run, "search_step", real_step)
    resumed = search_run.search(search_cfg, out)
    assert resumed.modules == reference.modules


def _fresh(path: Path) -> Path:
    (path / "checkpoint").mkdir(parents=True)
    return path


def test_infeasible_budget_fails_before_training(search_cfg: DictConfig) -> None:
    search_cfg.budget.value = 1000.0
    with pytest.raises(ValueError, match="feasible range"):
        search_app(search_cfg)
