"""Run bookkeeping: which folders a run may write, and when a finished run is reused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from amqs.utils.run import (TRACKED_RESULTS, check_results_dir, check_writable, prepare_run_dir, relative_run,
                            upsert_csv)


def test_debug_runs_never_write_the_measured_results() -> None:
    with pytest.raises(ValueError, match="a debug run \\(debug=smoke\\) never writes there"):
        check_results_dir(TRACKED_RESULTS, smoke=True)
    with pytest.raises(ValueError, match="a run of a random model"):
        check_results_dir(str(TRACKED_RESULTS) + "/", smoke=False, model_source="random")
    check_results_dir(TRACKED_RESULTS, smoke=False, model_source="embedded:minilm")  # asked for explicitly
    check_results_dir("outputs/smoke", smoke=True)
    with pytest.raises(ValueError, match="never writes there"):  # anything below results/ too
        check_results_dir(TRACKED_RESULTS / "runs" / "x", smoke=True)


def test_an_unwritable_output_fails_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(PermissionError, match="cannot create the output folder .*file/runs"):
        check_writable(tmp_path / "file" / "runs")  # a file where a folder should be
    table = tmp_path / "baselines.csv"
    table.write_text("")
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == table else real(p, mode))
    with pytest.raises(PermissionError, match="baselines.csv is not writable"):
        check_writable(table)


def test_a_record_without_its_weights_is_trained_again(tmp_path: Path) -> None:
    """A teacher whose metrics.json is committed but whose model/ is not (git keeps no weights) is rebuilt, not
    'reused' forever."""
    out = tmp_path / "teachers" / "m-sst2"
    out.mkdir(parents=True)
    record = json.dumps({"config_hash": "h", "dev_accuracy": 0.9})
    (out / "metrics.json").write_text(record)
    assert prepare_run_dir(out, "h", overwrite=False) == {"config_hash": "h", "dev_accuracy": 0.9}
    assert prepare_run_dir(out, "h", overwrite=False, require=("model",)) is None  # train it
    assert (out / "checkpoint" / "config_hash").read_text() == "h" and not (out / "metrics.json").exists()
    (out / "model").mkdir()
    (out / "metrics.json").write_text(record)  # the run finished
    assert prepare_run_dir(out, "h", overwrite=False, require=("model",))["dev_accuracy"] == 0.9
    assert not (out / "checkpoint").exists()  # a leftover checkpoint of a finished run is removed
    with pytest.raises(FileExistsError, match="another config"):
        prepare_run_dir(out, "other", overwrite=False)


def test_overwrite_discards_a_record_but_resumes_its_own_checkpoint(tmp_path: Path) -> None:
    """overwrite=true replaces a finished run; killed and started again with the same command, it resumes."""
    out = tmp_path / "runs" / "r"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({"config_hash": "h"}))
    assert prepare_run_dir(out, "h", overwrite=True) is None and not (out / "metrics.json").exists()
    (out / "checkpoint" / "state.pt").write_text("step 40")  # ... killed here
    assert prepare_run_dir(out, "h", overwrite=True) is None
    assert (out / "checkpoint" / "state.pt").read_text() == "step 40"  # kept: the rerun resumes
    assert prepare_run_dir(out, "other", overwrite=True) is None  # another config's checkpoint goes
    assert not (out / "checkpoint" / "state.pt").exists() and (out / "checkpoint" / "config_hash").read_text() == "other"


def test_rows_are_keyed_by_their_run_folder(tmp_path: Path) -> None:
    path, cols = tmp_path / "t.csv", ("run", "model", "dev_accuracy")
    upsert_csv(path, {"run": "runs/a", "model": "m1", "dev_accuracy": 0.5}, key=("run",), columns=cols)
    upsert_csv(path, {"run": "runs/b", "model": "m2", "dev_accuracy": 0.6}, key=("run",), columns=cols)
    upsert_csv(path, {"run": "runs/a", "model": "m1", "dev_accuracy": 0.7}, key=("run",), columns=cols)
    assert path.read_text().splitlines() == ["run,model,dev_accuracy", "runs/b,m2,0.6", "runs/a,m1,0.7"]
    assert relative_run(tmp_path / "runs" / "a", tmp_path) == "runs/a"


def test_the_hash_names_the_teacher_folder_not_its_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``teacher=shared_sst2`` with and without $AMQS_SHARED_DIR (or from another working directory) is one teacher."""
    from omegaconf import OmegaConf

    from amqs.utils.run import REPO_ROOT, config_hash

    folder = tmp_path / "shared" / "models" / "t"
    folder.mkdir(parents=True)
    cfg = lambda source: OmegaConf.create({"teacher": {"source": source}, "train": {"lr": 1.0}})  # noqa: E731
    absolute = config_hash(cfg(str(folder)))
    monkeypatch.chdir(tmp_path)
    assert config_hash(cfg("shared/models/t")) == config_hash(cfg("./shared/models/../models/t")) == absolute
    assert config_hash(cfg("bert-base-uncased")) != absolute  # a hub id stays as it is
    assert config_hash(cfg(str(tmp_path / "missing"))) != config_hash(cfg(str(tmp_path / "missing2")))
    monkeypatch.chdir(REPO_ROOT)  # the recorded runs' spelling from the repository root is unchanged
    assert config_hash(cfg("conf")) == config_hash(cfg(str(REPO_ROOT / "conf")))


@pytest.mark.parametrize("run", ["sst2-default-compression13.0", "sst2-recipe-aqbert-compression13.0"])
def test_finished_searches_keep_their_hash_across_search_arch_every(run: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """search.arch.every came after these runs: its legacy value 1 (the schema default) is not hashed, others are."""
    from amqs.utils.run import REPO_ROOT, config_hash
    from amqs.utils.runconfig import read_run_config

    monkeypatch.chdir(REPO_ROOT)  # the runs were recorded from the repository root
    folder = REPO_ROOT / "results" / "runs" / run
    saved, recorded = read_run_config(folder), json.loads((folder / "metrics.json").read_text())
    assert "search.arch.every" in saved.filled and saved.cfg.search.arch.every == 1  # not in the saved file
    assert config_hash(saved.cfg) == recorded["config_hash"]
    saved.cfg.search.arch.every = 4
    assert config_hash(saved.cfg) != recorded["config_hash"]


def test_your_own_files_are_hashed_by_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """data.train_file: an edited file is another run; the same bytes spelled another way the same run."""
    from amqs.utils.run import config_hash
    from tests.conftest import compose_cfg

    f = tmp_path / "train.csv"
    f.write_text("text,label\nfine,ok\n")

    def cfg(path: str) -> str:
        return config_hash(compose_cfg("finetune", ["data=files", f"data.train_file={path}"]))

    monkeypatch.chdir(tmp_path)
    first = cfg(str(f))
    assert cfg("train.csv") == first and first != config_hash(compose_cfg("finetune", ["data=sst2"]))
    f.write_text("text,label\nfine,good\n")
    assert cfg(str(f)) != first
