from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from amqs.export.app import main as export_main
from amqs.outer.artifacts import ARTIFACTS_ATTR, STORE_ATTR, PrefixedStore, make_store, trial_files
from amqs.outer.storage import load_study
from amqs.outer.study import run_study
from amqs.report.app import report
from tests.conftest import compose_cfg
from tests.outer.studies import STUDY, smoke_study


def test_bad_artifact_stores_fail_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"folder {tmp_path}/nope does not exist"):
        make_store(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="unknown scheme"):
        make_store("ftp://host/folder")
    assert isinstance(make_store(f"file://{tmp_path}"), FileSystemArtifactStore)
    try:
        import boto3  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"S3 needs boto3 \(pip install boto3\)"):
            make_store("s3://bucket/prefix")


def test_a_prefixed_store_keeps_its_ids_under_the_prefix(tmp_path: Path) -> None:
    (tmp_path / "amqs" / "big").mkdir(parents=True)
    store = PrefixedStore(FileSystemArtifactStore(tmp_path), "/amqs/big/")
    store.write("id1", io.BytesIO(b"bits"))
    assert (tmp_path / "amqs" / "big" / "id1").read_bytes() == b"bits"
    assert store.open_reader("id1").read() == b"bits"
    store.remove("id1")
    assert not (tmp_path / "amqs" / "big" / "id1").exists()


def test_trial_files_are_the_small_ones_unless_the_model_is_asked_for(tmp_path: Path) -> None:
    for rel in ("bits.json", "metrics.json", "retrain/student.pt", "retrain/train_log.jsonl", "export/model.onnx",
                "checkpoint/state.pt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert trial_files(tmp_path) == ["bits.json", "metrics.json", "retrain/train_log.jsonl"]
    assert trial_files(tmp_path, model=True) == ["bits.json", "metrics.json", "retrain/train_log.jsonl",
                                                 "retrain/student.pt", "export/model.onnx"]


@pytest.mark.slow
def test_the_report_and_an_export_need_only_the_storage_url(postgres_url: str, tmp_path: Path, glue_dir: Path,
                                                            smoke_teacher: Path) -> None:
    shared = tmp_path / "shared-artifacts"
    shared.mkdir()
    overrides = smoke_study(tmp_path / "worker", glue_dir, smoke_teacher)
    with_password = postgres_url.replace("postgres:@", "postgres:hunter2@")  # the test server trusts its socket
    storage = f"outer.storage='{with_password}'"
    run_study(compose_cfg("search", overrides + [storage, f"outer.artifacts={shared}", "outer.artifacts_model=true",
                                                 "outer.n_trials=2"]), command=f"amqs-search {storage}")
    study = load_study(tmp_path, storage=postgres_url, study_name=STUDY)
    assert study.user_attrs[STORE_ATTR] == str(shared)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert done and all({"bits.json", "metrics.json", "search_log.jsonl", "retrain/train_log.jsonl",
                         "retrain/student.pt"} <= set(t.user_attrs[ARTIFACTS_ATTR]) for t in done)
    worker_dir = tmp_path / "worker" / "studies" / STUDY
    written = [worker_dir / "config.yaml", worker_dir / "study.json", *worker_dir.glob("runs/*/metrics.json")]
    assert not [p for p in written if "hunter2" in p.read_text()]  # the URL is kept, its password is not
    assert "postgres:***@" in (worker_dir / "study.json").read_text()
    bits = {t.number: json.loads((worker_dir / t.user_attrs["run_dir"] / "bits.json").read_text()) for t in done}
    shutil.rmtree(tmp_path / "worker")  # no run folder, no study.json: only the storage URL and the artifact store

    elsewhere = tmp_path / "elsewhere"
    report(elsewhere, storage=postgres_url)  # the study's name and description come from the storage
    df = pd.read_csv(elsewhere / "pareto.csv")
    assert sorted(df["number"]) == sorted(t.number for t in study.trials)
    chosen = int(df[df["is_pareto"]].sort_values("search_val_accuracy", ascending=False).iloc[0]["number"])
    assert (elsewhere / f"bits_{chosen}.png").stat().st_size > 0
    assert json.loads((elsewhere / "runs" / f"trial_{chosen:04d}" / "bits.json").read_text()) == bits[chosen]
    assert "task sst2, model bert-tiny" in (elsewhere / "pareto.md").read_text()

    export_main([str(elsewhere), "--trial", str(chosen), "--storage", postgres_url, "--out", str(tmp_path / "export"),
                 "--no-eval"])
    assert (tmp_path / "export" / "model.onnx").stat().st_size > 0
    assert json.loads((tmp_path / "export" / "bits.json").read_text()) == bits[chosen]
