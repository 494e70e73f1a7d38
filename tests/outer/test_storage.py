from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from amqs.outer.pruning import INTERMEDIATE_ATTR
from amqs.outer.storage import (HEARTBEAT_ATTR, HeartbeatJournal, experimental, load_study, make_storage, safe_url,
                                scheme)
from amqs.outer.study import run_study
from tests.conftest import compose_cfg
from tests.outer.studies import STUDY, check_exactly, smoke_study, start_worker, wait_all


def test_bad_storage_urls_fail_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown storage scheme 'redis'"):
        make_storage("redis://localhost/0")
    with pytest.raises(ValueError, match="spells it postgresql://"):
        scheme("postgres://u@h/db")
    with pytest.raises(ValueError, match="does not exist"):
        make_storage(f"journal://{tmp_path}/nowhere/study.log")
    with pytest.raises(ValueError, match="name the journal file"):
        make_storage(f"journal://{tmp_path}")
    with pytest.raises(ValueError, match=r"cannot reach postgresql://amqs:\*\*\*@127.0.0.1:1/amqs: .*"):
        make_storage("postgresql://amqs:secret@127.0.0.1:1/amqs", 30, 120)  # nothing listens on port 1
    assert safe_url(f"journal://{tmp_path}/s.log") == f"journal://{tmp_path}/s.log"
    assert isinstance(make_storage(f"sqlite:///{tmp_path}/s.db", 30, 120), optuna.storages.RDBStorage)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the trials asked for by hand below
def test_a_journal_trial_without_heartbeat_is_failed_and_handed_on(tmp_path: Path) -> None:
    failed: list[int] = []
    storage = make_storage(f"journal://{tmp_path}/s.log", heartbeat_interval=1, grace_period=5,
                           on_stale=lambda study, trial: failed.append(trial.number))
    assert isinstance(storage, HeartbeatJournal)
    study = optuna.create_study(study_name="s", storage=storage)
    alive, dead, fresh = study.ask(), study.ask(), study.ask()
    storage.record_heartbeat(alive._trial_id)
    storage.set_trial_system_attr(dead._trial_id, HEARTBEAT_ATTR, time.time() - 60)  # its worker died a minute ago
    with experimental():
        optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.trials}
    assert states == {alive.number: TrialState.RUNNING, dead.number: TrialState.FAIL, fresh.number: TrialState.RUNNING}
    assert failed == [dead.number]  # a trial with no heartbeat yet (fresh) is not stale, as in Optuna's RDB storage
    storage.record_heartbeat(dead._trial_id)  # the late heartbeat of a worker that was only slow: ignored


def _kill_a_running_worker(url: str, workers: list, deadline: float) -> tuple[int, int]:
    """SIGKILL the worker of a RUNNING trial mid-search, while the others live: (trial number, pid)."""
    pids = {w.pid for w in workers}
    while time.monotonic() < deadline and all(w.poll() is None for w in workers):
        time.sleep(0.2)
        try:
            running = optuna.load_study(study_name=STUDY, storage=url).get_trials(states=(TrialState.RUNNING,))
        except KeyError:  # the workers are still creating the study
            continue
        for t in running:  # mid-search (it reported progress): its heartbeat is recorded, its worker known
            pid = int(t.user_attrs.get("worker", ":0").rsplit(":", 1)[1])
            if pid in pids and t.user_attrs.get(INTERMEDIATE_ATTR):
                os.kill(pid, signal.SIGKILL)  # no clean-up: the trial stays RUNNING in storage
                return t.number, pid
    raise AssertionError("no worker was caught mid-trial: " + " ".join(w.communicate()[0][-2000:] for w in workers))


@pytest.mark.slow
def test_three_workers_share_a_postgres_study_and_a_killed_ones_trial_is_rerun(
        postgres_url: str, tmp_path: Path, glue_dir: Path, smoke_teacher: Path) -> None:
    """Three workers on one PostgreSQL study (one test, not two: each worker spends most of its life importing);
    one is SIGKILLed mid-trial, the heartbeat fails its trial, a survivor reruns its parameters, and the study
    ends with exactly n_trials trials, none lost, none run twice."""
    overrides = smoke_study(tmp_path, glue_dir, smoke_teacher) + [f"outer.storage='{postgres_url}'"]
    workers = [start_worker(overrides, tmp_path / "logs", worker, n_trials=4) for worker in range(3)]
    victim, pid = _kill_a_running_worker(postgres_url, workers, time.monotonic() + 300)
    wait_all([w for w in workers if w.pid != pid])
    [w.wait() for w in workers]
    trials = {t.number: t for t in load_study(tmp_path, storage=postgres_url, study_name=STUDY).trials}
    assert trials[victim].state == TrialState.FAIL
    assert not (tmp_path / "studies" / STUDY / trials[victim].user_attrs["run_dir"] / "checkpoint").exists()
    with experimental():
        retried = [t for t in trials.values()
                   if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == victim]
    assert len(retried) == 1 and retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retried[0].params == trials[victim].params  # rerun with the dead trial's parameters, by a survivor
    assert retried[0].user_attrs["worker"] != trials[victim].user_attrs["worker"]
    finished = check_exactly(list(trials.values()), 4, tmp_path / "studies" / STUDY)
    assert len({t.user_attrs["worker"] for t in finished}) >= 2
    # Only the dead worker's trial and trials asked for after the last slot was taken (they ran nothing) fail.
    assert all(t.user_attrs.get("surplus") for t in trials.values() if t.state == TrialState.FAIL and t.number != victim)


@pytest.mark.slow
def test_two_workers_share_one_journal(tmp_path: Path, glue_dir: Path, smoke_teacher: Path) -> None:
    url = f"journal://{tmp_path}/study.log"
    overrides = smoke_study(tmp_path, glue_dir, smoke_teacher) + [f"outer.storage={url}"]
    wait_all([start_worker(overrides, tmp_path / "logs", worker, n_trials=3) for worker in range(2)])
    study = load_study(tmp_path, storage=url)  # the journal holds one study: its name is found
    check_exactly(study.trials, 3, tmp_path / "studies" / STUDY)
    assert all(t.user_attrs.get("surplus") for t in study.trials if t.state == TrialState.FAIL)
    # A rerun of the same command on the journal resumes the study and tops it up.
    summary = run_study(compose_cfg("search", smoke_study(tmp_path, glue_dir, smoke_teacher)
                                    + [f"outer.storage={url}", "outer.n_trials=4"]))
    assert summary["complete"] + summary["pruned"] == 4
