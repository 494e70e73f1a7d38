"""The Optuna outer loop: a multi-objective study over the budget and the search hyper-parameters.

    amqs-report results/studies/<name>                    # after (or during) a study: the Pareto report
    amqs-search outer=optuna debug=smoke                  # 2 trials of the tiny model, about a minute
    amqs-search outer=quick                               # 6 trials of MiniLM on SST-2, about an hour on 2 cores
    amqs-search outer=optuna teacher=shared_sst2 outer.n_trials=40 outer.storage=postgresql://...

Each trial samples ``outer.params`` (amqs.outer.space), applies them as overrides of the composed
config, and runs search -> derive -> retrain -> evaluate (``run_search``) in
``results/studies/<name>/runs/trial_<n>/``. Its objective values are ``outer.objectives``
(search-validation accuracy up, encoder bytes down by default; ``total_bytes``; ``latency_ms``: the trial's
export timed on ONNX Runtime against ORT int8 of the teacher, amqs.outer.latency); dev metrics are only stored
as user attributes. The search reports intermediate values so hopeless trials are pruned (amqs.outer.pruning).

Storage and resumption (amqs.outer.storage): SQLite ``study.db`` in the study folder by default, a PostgreSQL
(any SQLAlchemy) URL, or ``journal:///...`` on a shared filesystem, with heartbeats. A worker that dies leaves its
trial RUNNING; once that trial has had no heartbeat for ``outer.grace_period`` seconds, the next worker (or a rerun
of the same command) marks it FAILED, queues a copy with its parameters (``outer.stale_retries``), and the study
goes on until ``outer.n_trials`` trials are COMPLETE or PRUNED. Several workers may share one storage
(``outer.worker``; conf/hydra/launcher/ starts them from one command). With ``outer.artifacts`` each trial's
files are also copied to an artifact store any machine can read (amqs.outer.artifacts).

Shared once per study, not per trial: the teacher (resolved and checked before the first trial,
pinned as an absolute path in every trial's config; a missing one fails with the command that
makes it), the composed and resolved base config, the storage. Each trial reads its capped GLUE
splits and the teacher from disk (seconds, against minutes of search and retrain).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from amqs.outer.artifacts import STORE_ATTR, make_store, store_url, upload_trial
from amqs.outer.latency import reference_int8, trial_latency
from amqs.outer.pruning import ProgressReporter, make_pruner
from amqs.outer.space import ParamSpace, parse_space
from amqs.outer.storage import DB_FILE, HEARTBEAT_ATTR, STUDY_FILE, experimental, make_storage, safe_url
from amqs.search.run import run_search
from amqs.train.loop import NonFiniteLossError
from amqs.train.qat import resolve_teacher
from amqs.utils.run import config_hash, fingerprint, save_config, write_json

log = logging.getLogger(__name__)

# Objective name -> direction. Model selection uses the search-validation split only.
OBJECTIVES: dict[str, str] = {
    "search_val_accuracy": "maximize",
    "search_val_f1": "maximize",
    "encoder_bytes": "minimize",
    "total_bytes": "minimize",
    "latency_ms": "minimize",
}
# Run metrics stored on every finished trial (user attributes; dev is reported, never selected on).
REPORTED = ("search_val_accuracy", "search_val_f1", "dev_accuracy", "dev_f1", "encoder_bytes", "total_bytes",
            "fp32_encoder_bytes", "compression", "total_compression", "avg_bits", "pruned_fraction",
            "target_bytes", "repair_steps", "search_seconds", "retrain_seconds", "seconds", "entropy_fraction",
            "expected_over_budget", "repair_fraction", "undecided", "latency_ms", "reference_latency_ms",
            "latency_vs_int8")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WORKER_SEED_STRIDE = 100_003  # outer.worker k samples from seed + k * this: workers started together differ


class _SurplusTrial(Exception):
    """A trial asked for after the last slot was taken by another worker."""


@dataclass
class StudySetup:
    """What every trial of a study shares, computed once."""

    dir: Path
    objectives: list[str]
    space: ParamSpace
    base: DictConfig  # the resolved config of one run, teacher pinned, before the trial's overrides
    command: str
    latency_reference: Path | None = None  # the latency_ms objective's reference export (amqs.outer.latency)
    artifacts: Any = None  # the artifact store of outer.artifacts (amqs.outer.artifacts), or None


def resolve_objectives(names: Sequence[str]) -> list[str]:
    """Check ``outer.objectives``; returns the names (directions: :data:`OBJECTIVES`).

    Example:
        >>> [OBJECTIVES[n] for n in resolve_objectives(["search_val_accuracy", "encoder_bytes"])]
        ['maximize', 'minimize']
    """
    names = list(names)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"outer.objectives must be distinct names of {sorted(OBJECTIVES)}, got {names}")
    for n in names:
        if n.startswith("dev_"):
            raise ValueError(f"outer.objectives: {n!r} would select models on dev, which is only ever reported; "
                             "use search_val_accuracy / search_val_f1")
        if n not in OBJECTIVES:
            raise ValueError(f"outer.objectives: unknown objective {n!r}; known: {sorted(OBJECTIVES)}")
    return names


def study_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.results_dir) / "studies" / cfg.outer.name


def trial_name(number: int) -> str:
    return f"trial_{number:04d}"


def make_sampler(cfg: DictConfig | Any, seed: int | None) -> optuna.samplers.BaseSampler:
    if cfg.name == "tpe":  # Optuna's TPE handles several objectives (MOTPE)
        return optuna.samplers.TPESampler(n_startup_trials=cfg.n_startup_trials, seed=seed)
    if cfg.name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=cfg.population_size, seed=seed)
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"outer.sampler.name={cfg.name!r}; must be one of ['tpe', 'nsga2', 'random']")


def pinned_teacher(cfg: DictConfig) -> str:
    """The teacher every trial distils from, pinned: an absolute folder, or a hub id. A study does not fine-tune
    its teacher: a missing one fails with the amqs-finetune command that makes it (before the first trial)."""
    source = resolve_teacher(cfg)
    path = Path(source).expanduser()
    return str(path.resolve()) if path.is_dir() else source


def check_budget_range(space: ParamSpace, base: DictConfig) -> None:
    """Every budget a trial may sample must be feasible for the search space: a range the space cannot meet fails
    before the first trial (not in trial 0), naming the parameter and the feasible range.

    Costs one load of the teacher and one supernet build (seconds), once per study.
    """
    params = {p.key: p for p in space.params if p.key in ("budget.value", "budget.kind")}
    if "budget.value" not in params and "budget.kind" not in params:
        return
    from amqs.data.glue import task_spec
    from amqs.search.objective import Budget, resolve_budget
    from amqs.search.space import load_space
    from amqs.search.supernet import build_supernet
    from amqs.train.qat import load_teacher

    def ends(key: str, default: Any) -> list[Any]:
        p = params.get(key)
        if p is None:
            return [default]
        return list(p.choices) if p.type == "categorical" else [p.low, p.high]

    space_def = load_space(base.search.space)
    model, _ = load_teacher(base, task_spec(base.data).num_labels)
    build_supernet(model, space_def)
    for kind in ends("budget.kind", base.budget.kind):
        for value in ends("budget.value", base.budget.value):
            try:
                resolve_budget(Budget(str(kind), float(value)), model, space_def.encoder_prefix)
            except ValueError as e:
                name = (params.get("budget.value") or params["budget.kind"]).name
                raise ValueError(f"outer.params.{name}: a trial could sample {kind}={value}, which the "
                                 f"{base.search.space} space cannot meet: {e}") from None


def base_config(cfg: DictConfig, teacher: str) -> DictConfig:
    """The resolved config of one run (interpolations pinned before each trial moves ``paths``)."""
    base = copy.deepcopy(cfg)
    OmegaConf.resolve(base)
    base.outer = None
    base.teacher.source = teacher
    base.eval_search_val = True  # the objective
    return base


def trial_config(base: DictConfig, overrides: dict[str, Any], directory: Path, number: int) -> DictConfig:
    """One trial's config: ``base`` with the sampled values, writing to ``<study>/runs/trial_<n>``.

    Example:
        >>> cfg = trial_config(base, {"search.lam": 20.0}, Path("results/studies/s"), 3)  # doctest: +SKIP
        >>> cfg.name, cfg.search.lam                                                       # doctest: +SKIP
        ('trial_0003', 20.0)
    """
    cfg = copy.deepcopy(base)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False)  # typed: a float into an int field fails here
    cfg.paths.results_dir = str(directory)
    cfg.name = trial_name(number)
    cfg.overwrite = True  # trial numbers are unique in a study: anything there is a deleted study's
    return cfg


def _study_fingerprint(setup: StudySetup) -> str:
    """What makes trials comparable: the run config (minus tuned keys, teacher path) and the space."""
    c = OmegaConf.to_container(setup.base, resolve=True)
    for key in [p.key for p in setup.space.params] + ["teacher.source"]:
        *parents, leaf = key.split(".")
        node = c
        for part in parents:
            node = node[part]
        node.pop(leaf, None)
    return fingerprint({"config": config_hash(OmegaConf.create(c)), "space": setup.space.to_dict(),
                        "objectives": setup.objectives})


def _open(cfg: DictConfig, setup: StudySetup) -> optuna.Study:
    outer = cfg.outer
    url = outer.storage or f"sqlite:///{(setup.dir / DB_FILE).resolve()}"
    grace = outer.grace_period or 4 * outer.heartbeat_interval
    storage = make_storage(url, outer.heartbeat_interval, grace, on_stale=_on_stale(setup, grace, outer.stale_retries))
    study = optuna.create_study(study_name=outer.name, storage=storage, load_if_exists=True,
                                directions=[OBJECTIVES[n] for n in setup.objectives],
                                pruner=make_pruner(outer.pruner, len(setup.objectives)))
    fp = _study_fingerprint(setup)
    stamped = study.user_attrs.get("amqs_fingerprint")
    if stamped is None:
        study.set_user_attr("amqs_fingerprint", fp)
        study.set_user_attr("amqs_objectives", setup.objectives)
        study.set_user_attr("amqs_space", setup.space.to_dict())
    elif stamped != fp:
        raise ValueError(f"study {outer.name!r} in {safe_url(url)} was made with another config, search space "
                         f"or objectives ({stamped} != {fp}): its trials would not be comparable. Use the "
                         "original settings, or a new outer.name.")
    _name_metrics(study, setup.objectives)
    # What a machine with only the storage URL needs (amqs-report, amqs-export --trial): the study's description
    # and where its trials' files are copied.
    study.set_user_attr("amqs_info", _study_info(cfg, setup))
    if outer.artifacts is not None:
        study.set_user_attr(STORE_ATTR, store_url(outer.artifacts))
    # Resumed and concurrent workers must not replay the first trials' random samples.
    seed = None if outer.seed is None else outer.seed + len(study.trials) + WORKER_SEED_STRIDE * outer.worker
    study.sampler = make_sampler(outer.sampler, seed)
    return study


def _on_stale(setup: StudySetup, grace: int, retries: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    """What happens to a dead worker's trial once another worker (or a restart) marks it FAILED: its checkpoint is
    freed (the trial is not resumed) and, up to ``retries`` times, a WAITING copy with its parameters is queued
    (Optuna's RetryHeartbeatStaleTrialCallback), which the next worker to ask for a trial runs from the start."""
    with experimental():
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)

    def on_stale(study: optuna.Study, trial: FrozenTrial) -> None:
        log.warning("trial %d had no heartbeat for %d s (its worker died): marked FAILED%s", trial.number, grace,
                    ", its parameters queued again" if retries else "")
        if "run_dir" in trial.user_attrs:
            shutil.rmtree(setup.dir / trial.user_attrs["run_dir"] / "checkpoint", ignore_errors=True)
        fresh = copy.copy(trial)
        fresh.user_attrs = {}  # the rerun gets its own folder, progress, metrics and artifacts
        fresh.system_attrs = {k: v for k, v in trial.system_attrs.items()
                              if k != HEARTBEAT_ATTR and not k.startswith("artifacts:")}
        with experimental():
            retry(study, fresh)

    return on_stale


def _study_info(cfg: DictConfig, setup: StudySetup) -> dict[str, Any]:
    """``study.json``: what amqs-report needs to find and describe the study."""
    outer = cfg.outer
    return {"study_name": outer.name, "storage": DB_FILE if not outer.storage else safe_url(outer.storage),
            "artifacts": store_url(outer.artifacts), "objectives": setup.objectives,
            "directions": [OBJECTIVES[n] for n in setup.objectives], "params": setup.space.to_dict(),
            "task": cfg.data.task, "model": cfg.model.name, "command": setup.command}


def _without_password(cfg: DictConfig) -> DictConfig:
    """``cfg`` as the study folder keeps it: the storage URL without its password."""
    if not cfg.outer.storage:
        return cfg
    saved = copy.deepcopy(cfg)
    saved.outer.storage = safe_url(cfg.outer.storage)
    return saved


def _name_metrics(study: optuna.Study, objectives: list[str]) -> None:
    """Name the study's values after its objectives, so ``optuna.load_study(...).metric_names`` (and Optuna's
    dashboard and plots) say what each one is; a study made before amqs named them gets the names on resume."""
    if study.metric_names is None:
        with experimental():
            study.set_metric_names(list(objectives))


def _fail_stale(study: optuna.Study) -> None:
    with experimental():
        optuna.storages.fail_stale_trials(study)


def _objective(trial: optuna.Trial, study: optuna.Study, setup: StudySetup, cfg: DictConfig,
               mine: list[int]) -> Any:
    mine.append(trial.number)
    # Claim a slot: exactly n_trials trials run even when workers ask at the same moment.
    ahead = [t for t in study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
             if t.number < trial.number]
    if len(ahead) >= cfg.outer.n_trials:
        trial.set_user_attr("surplus", True)
        raise _SurplusTrial(f"trial {trial.number}: the study's {cfg.outer.n_trials} slots are taken")
    run_cfg = trial_config(setup.base, setup.space.suggest(trial), setup.dir, trial.number)
    trial.set_user_attr("run_dir", f"runs/{run_cfg.name}")
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    run_dir = setup.dir / "runs" / run_cfg.name
    try:
        metrics = run_search(run_cfg, command=f"{setup.command} (trial {trial.number})",
                             on_progress=ProgressReporter(study, trial, cfg.outer.pruner,
                                                          search_epochs=run_cfg.search.epochs))
        if setup.latency_reference is not None:  # the latency_ms objective: the trial's export, timed
            metrics = {**metrics, **trial_latency(run_dir, setup.latency_reference, cfg.outer.latency)}
    except (optuna.TrialPruned, NonFiniteLossError) as e:
        if isinstance(e, optuna.TrialPruned):
            # A pruned trial never resumes: drop its search checkpoint (hundreds of MB for MiniLM), keep its log.
            shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
        if setup.artifacts is not None:
            upload_trial(setup.artifacts, trial, run_dir, model=False)
        raise
    if setup.artifacts is not None:  # a copy of the trial's files any machine can read
        upload_trial(setup.artifacts, trial, run_dir, model=cfg.outer.artifacts_model)
    for k in REPORTED:
        trial.set_user_attr(k, metrics.get(k))
    values = tuple(float(metrics[n]) for n in setup.objectives)
    return values if len(values) > 1 else values[0]


def _counts(study: optuna.Study) -> dict[str, int]:
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {s.name.lower(): states.count(s) for s in TrialState}


def run_study(cfg: DictConfig, command: str = "amqs-search outer=optuna") -> dict[str, Any]:
    """Run (or resume, or join) the study of ``cfg.outer``; returns a summary.

    Example::

        summary = run_study(compose_cfg("search", ["outer=optuna", "debug=smoke"]))
        summary["pareto"]            # numbers of the Pareto-optimal trials
    """
    outer = cfg.outer
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("a study runs each trial in one process: start several workers (README) instead of torchrun")
    objectives = resolve_objectives(outer.objectives)
    space = parse_space(outer.params, cfg)  # all checks before the storage is touched
    make_pruner(outer.pruner, len(objectives))
    if outer.n_trials < 1:
        raise ValueError(f"outer.n_trials must be >= 1, got {outer.n_trials}")
    artifacts = make_store(outer.artifacts)  # a missing folder fails here, before any trial
    if outer.storage:  # the command is written into every trial's metrics.json: never with the password
        command = command.replace(str(outer.storage), safe_url(outer.storage))
    setup = StudySetup(study_dir(cfg), objectives, space, base_config(cfg, pinned_teacher(cfg)), command,
                       artifacts=artifacts)
    check_budget_range(space, setup.base)
    setup.dir.mkdir(parents=True, exist_ok=True)
    if "latency_ms" in objectives:
        setup.latency_reference = reference_int8(setup.dir, setup.base)
    study = _open(cfg, setup)
    save_config(_without_password(cfg), setup.dir / "config.yaml")
    write_json(setup.dir / STUDY_FILE, _study_info(cfg, setup))
    log.info("study %s in %s: %s", outer.name, setup.dir, _counts(study))
    failures, poll = 0, max(1, min(outer.heartbeat_interval, 10))
    while True:
        _fail_stale(study)
        counts = _counts(study)
        done = counts["complete"] + counts["pruned"]
        if done >= outer.n_trials:
            break
        if done + counts["running"] >= outer.n_trials:
            time.sleep(poll)  # other workers hold the last slots (or a dead one's trial awaits its grace period)
            continue
        mine: list[int] = []
        study.optimize(functools.partial(_objective, study=study, setup=setup, cfg=cfg, mine=mine), n_trials=1,
                       gc_after_trial=True, catch=(NonFiniteLossError, _SurplusTrial))
        last = next(t for t in study.get_trials(deepcopy=False) if t.number == mine[-1])
        failed = last.state == TrialState.FAIL and not last.user_attrs.get("surplus")
        failures = failures + 1 if failed else 0
        if failures >= outer.max_consecutive_failures:
            raise RuntimeError(f"{failures} trials failed in a row (non-finite losses): narrow outer.params "
                               "(e.g. search.arch.lr) and rerun; the study resumes")
    counts = _counts(study)
    pareto = sorted(t.number for t in study.best_trials) if counts["complete"] else []
    log.info("study %s finished: %s; Pareto trials %s. Report: amqs-report %s", outer.name, counts, pareto, setup.dir)
    return {"study": outer.name, "dir": str(setup.dir), **counts, "pareto": pareto}


__all__ = ["OBJECTIVES", "REPORTED", "StudySetup", "base_config", "make_sampler", "resolve_objectives",
           "pinned_teacher", "run_study", "study_dir", "trial_config", "trial_name"]
