from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import sqlalchemy
from optuna.trial import TrialState

from amqs.finetune import run as finetune
from amqs.outer.pruning import INTERMEDIATE_ATTR, meets_budget
from amqs.outer.storage import make_storage
from amqs.outer.study import run_study
from amqs.report.app import main as report_main
from amqs.search.app import run as search_app
from amqs.utils.runconfig import load_run_config
from tests.conftest import compose_cfg
from tests.outer.studies import FAST_SEARCH, FINISHED, STUDY, start_worker



@pytest.fixture
def overrides(tmp_path: Path, glue_dir: Path) -> list[str]:
    """outer=optuna debug=smoke under tmp_path, with its tiny teacher fine-tuned once."""
    base = ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}", "train.num_threads=1"]
    finetune(compose_cfg("finetune", base))
    return base + FAST_SEARCH


def _load(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path / 'studies' / STUDY / 'study.db'}")


def _states(study: optuna.Study) -> dict[str, int]:
    states = [t.state.name for t in study.get_trials()]
    return {s: states.count(s) for s in set(states)}


@pytest.mark.slow
def test_smoke_study_end_to_end_then_report(overrides: list[str], tmp_path: Path) -> None:
    summary = search_app(compose_cfg("search", overrides + ["outer.n_trials=2"]), command="test")
    folder = tmp_path / "studies" / STUDY
    study = _load(tmp_path)
    assert summary["complete"] + summary["pruned"] == 2 == len(study.trials)
    assert study.metric_names == ["search_val_accuracy", "encoder_bytes"]  # what Optuna's tools show
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert done, "the first trial cannot be pruned (nothing to compare with)"
    for t in done:  # the objective is search-val; dev is only reported
        assert t.values[0] == t.user_attrs["search_val_accuracy"] and t.user_attrs["dev_accuracy"] is not None
        assert t.values[1] == t.user_attrs["encoder_bytes"]
        assert (folder / t.user_attrs["run_dir"] / "metrics.json").exists()
        # Reported at exactly the search's log points where the derived architecture met the budget.
        log = [json.loads(line) for line in (folder / t.user_attrs["run_dir"] / "search_log.jsonl").open()]
        assert [s for s, _ in t.user_attrs.get(INTERMEDIATE_ATTR, [])] == [r["step"] for r in log if meets_budget(r)]
    # The teacher was resolved once and pinned, so moving paths.results_dir per trial cannot lose it.
    trial_cfg = load_run_config(folder / "runs" / "trial_0000")
    assert trial_cfg.teacher.source == str((tmp_path / "teachers" / "bert-tiny-sst2" / "model").resolve())

    report_main([str(folder)])
    df = pd.read_csv(folder / "pareto.csv")
    assert {"number", "state", "param_budget", "param_lam", "param_eps", "param_t0", "param_eta", "param_arch_lr",
            "search_val_accuracy", "dev_accuracy", "encoder_bytes", "total_bytes", "encoder_mb", "compression",
            "avg_bits", "pruned_fraction", "is_pareto"} <= set(df.columns)
    assert sorted(df.loc[df["is_pareto"], "number"]) == sorted(t.number for t in study.best_trials)
    best = df[df["is_pareto"]].sort_values("search_val_accuracy", ascending=False).iloc[0]
    assert (folder / f"bits_{best['number']}.png").stat().st_size > 0
    assert (folder / "pareto.png").stat().st_size > 0
    assert "Pareto-optimal trials" in (folder / "pareto.md").read_text()

    # Rerunning tops the study up to the new n_trials; another config may not join it.
    summary = run_study(compose_cfg("search", overrides + ["outer.n_trials=3"]))
    assert summary["complete"] + summary["pruned"] == 3 == len(_load(tmp_path).trials)
    with pytest.raises(ValueError, match="another config"):
        run_study(compose_cfg("search", overrides + ["outer.n_trials=4", "data.max_train_examples=128"]))


@pytest.mark.slow
def test_latency_objective_times_each_trials_export(overrides: list[str], tmp_path: Path) -> None:
    lat = ["outer.objectives=[search_val_accuracy,latency_ms]", "outer.n_trials=1", "outer.latency.length=32",
           "outer.latency.warmup=1", "outer.latency.rounds=5"]
    run_study(compose_cfg("search", overrides + lat))
    folder = tmp_path / "studies" / STUDY
    trial = _load(tmp_path).trials[0]
    assert trial.state == TrialState.COMPLETE
    attrs = trial.user_attrs
    assert trial.values[1] == attrs["latency_ms"] > 0 and attrs["reference_latency_ms"] > 0
    assert attrs["latency_vs_int8"] == pytest.approx(attrs["latency_ms"] / attrs["reference_latency_ms"], rel=1e-3)
    assert (folder / attrs["run_dir"] / "export" / "model.onnx").exists()  # the trial's real export was timed
    assert (folder / "latency-reference" / "int8" / "model.onnx").exists()  # ORT int8 of the teacher, once


def test_bad_objectives_pruner_or_teacher_fail_before_any_trial(tmp_path: Path, glue_dir: Path) -> None:
    base = ["outer=optuna", "debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}"]
    with pytest.raises(ValueError, match="only ever reported"):
        run_study(compose_cfg("search", base + ["outer.objectives=[dev_accuracy,encoder_bytes]"]))
    with pytest.raises(ValueError, match="needs a single objective"):
        run_study(compose_cfg("search", base + ["outer.pruner.name=median"]))
    with pytest.raises(FileNotFoundError, match="amqs-finetune debug=smoke"):
        run_study(compose_cfg("search", base))  # no teacher in tmp_path
    assert not (tmp_path / "studies").exists()


def test_an_infeasible_budget_range_fails_before_any_trial(overrides: list[str], tmp_path: Path) -> None:
    """A range the search space cannot meet (the smallest model is ~16x smaller than fp32 here) is refused up front."""
    with pytest.raises(ValueError, match=r"outer.params.budget: a trial could sample compression=1000.0, which the "
                                         r"default space cannot meet: .*feasible range"):
        run_study(compose_cfg("search", overrides + ["outer.params.budget.high=1000"]))
    assert not list((tmp_path / "studies").glob("*/runs/*"))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the dead worker's ask() below
def test_a_stale_running_trial_is_failed_and_the_study_completes(overrides: list[str], tmp_path: Path) -> None:
    # A worker that died mid-trial: its trial is RUNNING with a last heartbeat and nobody finishing it. Its study
    # has no metric names, like one made before amqs named them: the resumed study gets them.
    folder = tmp_path / "studies" / STUDY
    folder.mkdir(parents=True)
    storage = make_storage(f"sqlite:///{folder / 'study.db'}", heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(study_name=STUDY, storage=storage, directions=["maximize", "minimize"])
    dead = study.ask()
    storage.record_heartbeat(dead._trial_id)
    assert study.metric_names is None
    t0 = time.monotonic()
    summary = run_study(compose_cfg("search", overrides + ["outer.n_trials=1"]))
    states = {t.number: t.state for t in _load(tmp_path).trials}
    assert states == {0: TrialState.FAIL, 1: TrialState.COMPLETE}
    assert _load(tmp_path).metric_names == ["search_val_accuracy", "encoder_bytes"]
    assert summary["fail"] == 1 and summary["complete"] == 1
    assert time.monotonic() - t0 >= 3  # it waited for the grace period: a live worker is not robbed


@pytest.mark.slow
def test_a_killed_worker_is_failed_on_the_next_start(overrides: list[str], tmp_path: Path) -> None:
    worker = start_worker(overrides, tmp_path / "logs", worker=0, n_trials=20)
    deadline, victim = time.monotonic() + 300, None
    try:
        while victim is None and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.2)
            try:
                running = _load(tmp_path).get_trials(states=(TrialState.RUNNING,))
            except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # the worker is still creating the storage
                continue
            victim = next((t.number for t in running if t.user_attrs.get(INTERMEDIATE_ATTR)), None)
    finally:
        worker.kill()  # SIGKILL: no clean-up, the trial stays RUNNING in storage
        worker.wait()
    assert victim is not None, worker.stdout.read()[-3000:]
    done = sum(t.state in FINISHED for t in _load(tmp_path).trials)
    summary = run_study(compose_cfg("search", overrides + [f"outer.n_trials={done + 1}"]))
    trials = {t.number: t for t in _load(tmp_path).trials}
    assert trials[victim].state == TrialState.FAIL
    assert not (tmp_path / "studies" / STUDY / trials[victim].user_attrs["run_dir"] / "checkpoint").exists()
    assert summary["complete"] + summary["pruned"] == done + 1


def test_the_study_presets_compose() -> None:
    quick = compose_cfg("search", ["outer=quick"])
    assert quick.outer.n_trials == 6 and list(quick.outer.objectives) == ["search_val_accuracy", "encoder_bytes"]
    deploy = compose_cfg("search", ["outer=deploy"])
    assert deploy.search.space == "embeddings" and deploy.budget.kind == "total_compression"
    assert list(deploy.outer.objectives) == ["search_val_accuracy", "total_bytes", "latency_ms"]
    assert deploy.outer.n_trials == 8 and deploy.data.max_train_examples == quick.data.max_train_examples
    assert (deploy.outer.params.budget.low, deploy.outer.params.budget.high) == (8, 14)
