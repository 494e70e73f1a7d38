"""Study throughput with 1 and then 2 workers sharing one PostgreSQL study (issue 19).

    python bench/scale_workers.py --trials 8 --out results/scale_workers.json   # the measurement: a quiet machine
    python bench/scale_workers.py --smoke                                       # 2 trials a phase, into a temp dir

A study of small trials (the smoke model of conf/debug/smoke.yaml, outer=optuna's smoke sizing, no pruning so every
trial does the same work) on a real PostgreSQL server started from Python (pgserver, the dev extra), run twice on
fresh databases: by one worker, then by two started together (separate processes, one thread each). Trials per
minute count the finished trials over the span from the first trial's start to the last one's end (the workers'
start-up, mostly imports, is reported apart as ``wall_s``). ``workers2_over_1`` is the ratio of the two rates;
``lost`` (finished trials short of ``--trials``, or without their run folder's files) and ``duplicated`` (trials
beyond ``--trials``, or two trials in one folder) must both be 0.

It refuses to write under results/ in smoke mode, or while the machine is busy (1-minute load average over
``--max-load``): a rate measured next to other jobs says nothing about the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
STUDY = "scale"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def smoke_overrides(work: Path, glue_dir: str) -> list[str]:
    return ["debug=smoke", f"paths.results_dir={work}", f"data.glue_dir={glue_dir}", "train.num_threads=1"]


def make_teacher(work: Path, glue_dir: str) -> Path:
    """The smoke model's fine-tuned teacher, once for both phases."""
    subprocess.run([sys.executable, "-m", "amqs.finetune", *smoke_overrides(work, glue_dir),
                    f"hydra.run.dir={work}/logs/finetune"], cwd=REPO, env=_env(), check=True, capture_output=True)
    return work / "teachers" / "bert-tiny-sst2" / "model"


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)  # this checkout's amqs
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def run_phase(workers: int, url: str, work: Path, teacher: Path, glue_dir: str, trials: int) -> dict[str, Any]:
    """One study of ``trials`` trials by ``workers`` worker processes started together; its numbers."""
    overrides = [*smoke_overrides(work, glue_dir), "outer=optuna", f"outer.name={STUDY}", f"outer.storage='{url}'",
                 f"outer.n_trials={trials}", "outer.pruner.name=none", f"teacher.source={teacher}"]
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "amqs.search.app", *overrides, f"outer.worker={k}",
                               f"hydra.run.dir={work}/logs/worker{k}"], cwd=REPO, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in range(workers)]
    outputs = [p.communicate()[0] for p in procs]
    wall = time.monotonic() - t0
    if any(p.returncode for p in procs):
        raise RuntimeError("a worker failed:\n" + "\n".join(o[-2000:] for o in outputs))
    study = optuna.load_study(study_name=STUDY, storage=url)
    return {"workers": workers, "wall_s": round(wall, 1), **throughput(study.trials),
            **integrity(study.trials, trials, work / "studies" / STUDY)}


def throughput(trials: list[optuna.trial.FrozenTrial]) -> dict[str, Any]:
    """Finished trials per minute, from the first start to the last end."""
    done = [t for t in trials if t.state in FINISHED]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {"finished": len(done), "span_s": round(span, 1), "trials_per_min": round(60 * len(done) / span, 3)}


def integrity(trials: list[optuna.trial.FrozenTrial], n_trials: int, study_dir: Path) -> dict[str, int]:
    """Trials lost (short of n_trials, or finished without their files) and run twice (beyond n_trials, or two
    trials in one run folder)."""
    done = [t for t in trials if t.state in FINISHED]
    folders = [t.user_attrs.get("run_dir") for t in done]
    missing = sum(not (study_dir / f / "metrics.json").is_file() for f in folders if f) + folders.count(None)
    return {"lost": max(0, n_trials - len(done)) + missing,
            "duplicated": max(0, len(done) - n_trials) + len(folders) - len(set(folders))}


def measure(trials: int, work: Path, glue_dir: str) -> dict[str, Any]:
    import pgserver

    teacher = make_teacher(work, glue_dir)
    server = pgserver.get_server(tempfile.mkdtemp(prefix="amqs-pg-"), cleanup_mode="delete")
    try:
        phases = {}
        for n in (1, 2):
            server.psql(f"CREATE DATABASE scale_{n};")
            phases[f"workers{n}"] = run_phase(n, server.get_uri(f"scale_{n}"), work / f"w{n}", teacher, glue_dir,
                                              trials)
            print(json.dumps(phases[f"workers{n}"]), flush=True)
    finally:
        server.cleanup()
    one, two = phases["workers1"], phases["workers2"]
    return {"trials": trials, **phases, "workers2_over_1": round(two["trials_per_min"] / one["trials_per_min"], 3),
            "lost_or_duplicated": sum(p["lost"] + p["duplicated"] for p in phases.values()),
            "model": "bert-tiny (debug=smoke), 1 thread per worker, outer.pruner.name=none",
            "cpus": os.cpu_count()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8, help="trials of each phase's study")
    p.add_argument("--smoke", action="store_true", help="2 trials a phase; writes into a temp folder only")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: results/scale_workers.json; smoke: "
                                                         "a temp folder)")
    p.add_argument("--max-load", type=float, default=0.5, help="refuse to write results/ over this load average")
    p.add_argument("--glue-dir", default=os.environ.get("AMQS_GLUE_DIR", str(REPO.parent / "shared/data/glue")))
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="amqs-scale-"))
    out = args.out or (work / "scale_workers.json" if args.smoke else RESULTS / "scale_workers.json")
    load = os.getloadavg()[0]
    if out.resolve().is_relative_to(RESULTS.resolve()) and (args.smoke or load > args.max_load):
        sys.exit(f"scale_workers: not writing {out}: " + ("a smoke run" if args.smoke else
                 f"the machine is busy (load {load:.1f} > --max-load {args.max_load})") + "; give --out elsewhere")
    result = measure(2 if args.smoke else args.trials, work, args.glue_dir)
    result.update(load_before=round(load, 2), smoke=args.smoke,
                  command="python bench/scale_workers.py " + " ".join(sys.argv[1:]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{out}: workers2_over_1 {result['workers2_over_1']}, lost or duplicated {result['lost_or_duplicated']}")


if __name__ == "__main__":
    main()
