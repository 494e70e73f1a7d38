from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig

from amqs.finetune import run


@pytest.mark.slow
def test_smoke_run_writes_teacher_and_is_reused(smoke_cfg: DictConfig, tmp_path: Path) -> None:
    metrics = run(smoke_cfg, command="test")
    out = tmp_path / "teachers" / "bert-tiny-sst2"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics and 0.0 <= saved["dev_accuracy"] <= 1.0 and saved["dev_examples"] == 128
    assert (out / "model" / "config.json").exists() and (out / "config.yaml").exists()
    assert not (out / "checkpoint").exists()
    rows = list(csv.DictReader((tmp_path / "teachers.csv").open()))
    assert len(rows) == 1 and rows[0]["task"] == "sst2" and rows[0]["model"] == "bert-tiny"
    mtime = (out / "metrics.json").stat().st_mtime
    assert run(smoke_cfg) == metrics and (out / "metrics.json").stat().st_mtime == mtime  # reused

    smoke_cfg.train.lr = 5e-4
    with pytest.raises(FileExistsError, match="overwrite=true"):
        run(smoke_cfg)


@pytest.mark.slow
def test_cli_smoke(tmp_path: Path, glue_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "amqs.finetune", "debug=smoke", "data=mrpc", f"paths.results_dir={tmp_path}",
         f"data.glue_dir={glue_dir}"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tokenize:" not in proc.stderr and "%|" not in proc.stderr  # debug=smoke sets train.progress=false
    metrics = json.loads((tmp_path / "teachers" / "bert-tiny-mrpc" / "metrics.json").read_text())
    assert metrics["dev_f1"] is not None and metrics["command"].startswith("amqs-finetune debug=smoke data=mrpc")


def test_cli_rejects_unknown_key(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "amqs.finetune", "debug=smoke", "train.epoch=2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "epoch" in proc.stderr


def test_name_sets_the_teacher_folder_without_changing_the_hash(tmp_path: Path) -> None:
    from amqs.finetune import teacher_dir
    from amqs.utils.run import config_hash
    from tests.conftest import compose_cfg

    derived = compose_cfg("finetune", ["debug=smoke", f"paths.results_dir={tmp_path}"])
    named = compose_cfg("finetune", ["debug=smoke", f"paths.results_dir={tmp_path}", "name=bert-tiny-sst2-replay"])
    assert teacher_dir(derived) == tmp_path / "teachers" / "bert-tiny-sst2"
    assert teacher_dir(named) == tmp_path / "teachers" / "bert-tiny-sst2-replay"
    assert config_hash(named) == config_hash(derived)


REVIEWS = Path(__file__).resolve().parent / "data" / "files"
FILES_OVERRIDES = ["data=files", f"data.train_file={REVIEWS / 'reviews_train.csv'}",
                   f"data.validation_file={REVIEWS / 'reviews_dev.csv'}", "data.text_column=review",
                   "data.label_column=stars"]


@pytest.mark.slow
def test_cli_smoke_on_your_own_files(tmp_path: Path) -> None:
    """README's command: a 3-class CSV with string labels gives a 3-label teacher whose config names the labels."""
    proc = subprocess.run([sys.executable, "-m", "amqs.finetune", "debug=smoke", *FILES_OVERRIDES,
                           f"paths.results_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "teachers" / "bert-tiny-files"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "files" and metrics["dev_examples"] == 6 and metrics["train_rows"] == 24
    assert 0.0 <= metrics["dev_macro_f1"] <= 1.0 and metrics["dev_f1"] is None
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "bad", "1": "good", "2": "ok"} and config["label2id"]["ok"] == 2
