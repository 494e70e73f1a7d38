"""Helpers of the study tests: the smoke study's overrides, workers started as separate processes, trial checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tests.conftest import REPO

STUDY = "sst2-bert-tiny-default"  # outer.name under debug=smoke
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# The architecture moves at every one of a smoke search's 8 steps (conf: every 4th) with AQ-BERT's schedule and size
# loss, which walk the argmax itself into the budget within them (the conf's commitment settings bring the argmax
# there only late in a search), so the trials report intermediate values (the pruner and the kill tests wait for them).
FAST_SEARCH = ["outer=optuna", "outer.heartbeat_interval=1", "outer.grace_period=3", "search.arch.every=1",
               "search.size_on=argmax", "search.arch.lr=0.05", "search.t_final=null", "search.hard_from=null",
               "search.entropy_weight=0"]


def smoke_study(results_dir: Path, glue_dir: Path, teacher: Path) -> list[str]:
    """The overrides of a smoke study under ``results_dir`` distilling from ``teacher`` (made once per session)."""
    return ["debug=smoke", f"paths.results_dir={results_dir}", f"data.glue_dir={glue_dir}", "train.num_threads=1",
            f"teacher.source={teacher}", *FAST_SEARCH]


def start_worker(overrides: list[str], log_dir: Path, worker: int, n_trials: int) -> subprocess.Popen:
    """``amqs-search <overrides> outer.worker=<worker>`` as its own process (one thread), output captured."""
    cmd = [sys.executable, "-m", "amqs.search.app", *overrides, f"outer.worker={worker}", f"outer.n_trials={n_trials}",
           f"hydra.run.dir={log_dir}/worker{worker}"]
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)  # this checkout's amqs
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_all(workers: list[subprocess.Popen], timeout: float = 400) -> None:
    outputs = [w.communicate(timeout=timeout)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * len(workers), "\n".join(o[-3000:] for o in outputs)


def check_exactly(trials: list[optuna.trial.FrozenTrial], n_trials: int, study_dir: Path) -> list[optuna.trial.FrozenTrial]:
    """Exactly ``n_trials`` finished trials, none lost (each has its own finished run folder) and none run twice
    (one folder per trial, every folder a trial's). Returns the finished trials."""
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == n_trials, [(t.number, t.state.name) for t in trials]
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    run_dirs = [t.user_attrs["run_dir"] for t in finished]
    assert len(set(run_dirs)) == n_trials
    assert all((study_dir / d / "search_log.jsonl").is_file() for d in run_dirs)
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    assert all((study_dir / t.user_attrs["run_dir"] / "metrics.json").is_file() for t in complete)
    # Every run folder on disk belongs to exactly one trial that ran it.
    ran = [t.user_attrs["run_dir"] for t in trials if "run_dir" in t.user_attrs]
    assert sorted(ran) == sorted(str(p.relative_to(study_dir)) for p in (study_dir / "runs").iterdir())
    return finished
