"""``amqs-replay RUN``: rerun a recorded run from its own saved config, or check in seconds that it can be.

    amqs-replay results/runs/sst2-w8a8 --check      # the config, the recorded command, the inputs; no training
    amqs-replay results/runs/sst2-w8a8              # rerun into results/runs/sst2-w8a8-replay, compare
    amqs-replay results/studies/<name> --check      # the study config and every trial

RUN is any run folder: a teacher (``results/teachers/<name>``), a QAT run (a staged recipe is rerun stage by
stage; a single stage ``<run>/1-w8`` reruns from the recorded previous stage), a search run, a search's
``retrain/``, a study trial (``results/studies/<name>/runs/trial_NNNN``, a search run). Its ``config.yaml``
is read with today's schema (:mod:`amqs.utils.runconfig`); the rerun uses that config as it is (same
seed, data slice and teacher) and writes a NEW folder beside RUN (``<name>-replay``, ``-replay2`` ...),
never the original and never the results tables; then old and new metrics are printed side by side.

``--check`` stats what the run reads: the data folder and its task files, the teacher, the pretrained
model when it is a path, ``init_from``, ``assignment``, the search space, the retrain's ``bits.json``. A
missing input fails with one line naming it. Weights that git does not keep (a teacher's ``model/``, a
run's ``student.pt``) are made by other recorded runs: a missing one is listed with the command that
makes it (and a shared copy when there is one), and the check passes; the rerun itself refuses to start
until they are there. When the recorded ``data.glue_dir`` does not exist here, ``$AMQS_GLUE_DIR`` is used
if it holds the task (the rows are the same: ``glue_dir`` is not part of the config hash).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, open_dict

from amqs.utils.cli import user_errors
from amqs.utils.run import REPO_ROOT, run_dir, shared_models_dir, write_json
from amqs.utils.runconfig import SCHEMAS, SavedConfig, read_run_config

log = logging.getLogger("amqs.replay")

ROLES = {"teacher": "fp32 teacher (amqs-finetune)", "qat": "QAT run (amqs-qat)",
         "staged": "staged QAT recipe (amqs-qat), rerun stage by stage", "search": "search run (amqs-search)",
         "retrain": "retrain of a searched assignment (amqs-search)", "study": "Optuna study (amqs-search outer=...)"}
COMPARED = ("dev_accuracy", "dev_f1", "search_val_accuracy", "search_val_f1", "encoder_bytes", "total_bytes",
            "seconds")
_STAGE = re.compile(r"^(\d+)-")


class ReplayError(ValueError):
    """A run that cannot be checked or rerun; the one-line message names the folder and the cause."""


@dataclass
class Input:
    """One file or folder a run reads, as found on this machine."""

    what: str  # the config key, e.g. teacher.source
    path: str
    ok: bool
    weights: bool = False  # weights git does not keep, made by another recorded run
    note: str = ""  # how to remake missing weights; a substitution; why something is not checked

    def line(self) -> str:
        state = "ok" if self.ok else ("missing weights (not in git)" if self.weights else "MISSING")
        return f"{self.what}: {self.path} {state}" + (f" ({self.note})" if self.note else "")


@dataclass
class Plan:
    """A run folder as replay sees it: saved config, role, recorded metrics and command, inputs."""

    folder: Path
    saved: SavedConfig
    role: str
    metrics: dict[str, Any]
    command: str
    inputs: list[Input] = field(default_factory=list)
    children: list["Plan"] = field(default_factory=list)  # a study's trials (and their retrains)
    glue_dir: Optional[str] = None  # the data folder the rerun reads

    @property
    def missing_weights(self) -> list[Input]:
        own = [i for i in self.inputs if i.weights and not i.ok]
        return own + [w for c in self.children for w in c.missing_weights]


def check_run(folder: str | Path) -> Plan:
    """Load ``folder``'s config and stat what it reads (no model, no data); a missing input raises ReplayError.

    Example::

        plan = check_run("results/runs/sst2-w8a8")
        plan.role, plan.command, plan.saved.filled, plan.missing_weights
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ReplayError(f"{folder}: no such run folder")
    saved = read_run_config(folder)
    cfg, kind = saved.cfg, saved.kind
    metrics = _read_json(folder / ("study.json" if kind == "study" else "metrics.json"))
    plan = Plan(folder, saved, _role(saved, folder, metrics), metrics, metrics.get("command", ""))
    role = plan.role
    plan.glue_dir, data = _data_input(cfg)
    plan.inputs.append(data)
    stages = _stages(folder, metrics) if role == "staged" else []
    for i, c in enumerate([read_run_config(p).cfg for p in stages] + [cfg]):
        # A staged recipe's stages start from the previous replayed stage: only the first one's start is read.
        plan.inputs += [x for x in _model_inputs(c, role) if (x.what != "init_from" or not stages or i == 0)
                        and (x.what, x.path) not in {(y.what, y.path) for y in plan.inputs}]
    if role == "retrain":
        plan.inputs.append(_file_input("bits.json", folder / "bits.json"))
    if role == "study":
        trials = sorted(p for p in (folder / "runs").glob("*") if (p / "config.yaml").is_file())
        plan.children = [check_run(p) for t in trials for p in (t, t / "retrain") if (p / "config.yaml").is_file()]
    bad = next((i for i in plan.inputs if not i.ok and not i.weights), None)
    if bad is not None:
        raise ReplayError(f"{folder}: missing input {bad.line()}")
    return plan


def _role(saved: SavedConfig, folder: Path, metrics: dict[str, Any]) -> str:
    """teacher | qat | staged | search | retrain | study (the keys of ROLES)."""
    if saved.kind in ("finetune", "study"):
        return "teacher" if saved.kind == "finetune" else "study"
    if saved.kind == "search":  # a retrain is named <search>/<folder> (amqs.search.run.retrain_assignment)
        return "retrain" if "/" in saved.cfg.name else "search"
    return "staged" if _stages(folder, metrics) else "qat"


def describe(plan: Plan, indent: str = "") -> list[str]:
    """What ``--check`` prints: role, recorded command, the rerun, filled keys, inputs."""
    s = plan.saved
    lines = [f"{indent}{plan.folder}: {ROLES[plan.role]}, {SCHEMAS[s.kind].__name__}",
             f"{indent}  recorded: {plan.command or '(no metrics.json: the run did not finish)'}"]
    if plan.role == "study":
        lines.append(f"{indent}  rerun:    not as a whole (Optuna sampled its trials): amqs-replay "
                     f"{plan.folder / 'runs' / 'trial_NNNN'}")
    else:
        lines.append(f"{indent}  rerun:    amqs-replay {plan.folder}   -> {replay_folder(plan.folder)}")
    lines.append(f"{indent}  filled from today's defaults: {', '.join(s.filled) or 'none'}")
    lines += [f"{indent}  {i.line()}" for i in plan.inputs]
    for child in plan.children:
        lines += describe(child, indent + "  ")
    return lines


def replay_folder(folder: Path) -> Path:
    """Where ``folder`` replays: the first of ``<folder>-replay``, ``-replay2``, ... beside it that is free or holds
    an unfinished replay (no metrics.json: a killed replay resumes there, from its checkpoint)."""
    for n in range(1, 1000):
        candidate = folder.with_name(f"{folder.name}-replay{n if n > 1 else ''}")
        if not (candidate / "metrics.json").exists():
            return candidate
    raise ReplayError(f"{folder}: 999 replays already beside it")


def replay_run(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Rerun ``folder`` from its saved config into a new folder beside it; returns (old, new, new folder).

    Nothing is written to the original folder or to the results tables.
    """
    plan = check_run(folder)
    if plan.role == "study":
        raise ReplayError(f"{plan.folder}: a study is not rerun as a whole (Optuna sampled its trials); replay a "
                          f"trial: amqs-replay {plan.folder / 'runs' / 'trial_NNNN'}")
    if plan.missing_weights:
        w = plan.missing_weights[0]
        raise ReplayError(f"{plan.folder}: needs {w.what} {w.path}, not in git: {w.note}")
    out = replay_folder(plan.folder)
    command = f"amqs-replay {plan.folder}"
    cfg = _placed(plan.saved.cfg, plan, out)
    log.info("replaying %s (%s) into %s", plan.folder, ROLES[plan.role], out)
    if plan.role == "teacher":
        from amqs.finetune import finetune

        new = finetune(cfg, command)
    elif plan.role == "qat":
        from amqs.qat import train

        new = train(cfg, command)
    elif plan.role == "staged":
        new = _replay_staged(plan, cfg, command)
    elif plan.role == "retrain":
        from amqs.quant import BitAssignment
        from amqs.train.qat import run_qat

        new = run_qat(cfg, BitAssignment.from_json(plan.folder / "bits.json"), command=command,
                      student_init=cfg.model.source if cfg.reinit else None)
    else:
        from amqs.search.run import run_search

        new = run_search(cfg, command)
    return plan.metrics, new, out


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Old and new metrics side by side with their difference (the keys of COMPARED both runs have)."""
    rows = [f"{'metric':<22}{'recorded':>14}{'replay':>14}{'difference':>14}"]
    for k in COMPARED:
        a, b = old.get(k), new.get(k)
        if a is None and b is None:
            continue
        diff = f"{b - a:+.4g}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) else ""
        rows.append(f"{k:<22}{_fmt(a):>14}{_fmt(b):>14}{diff:>14}")
    fa, fb = old.get("data_fingerprint"), new.get("data_fingerprint")
    if fa and fb:
        rows.append(f"data fingerprint: {'the same rows' if fa == fb else 'DIFFERENT ROWS'}")
    pa, pb = old.get("provenance") or {}, new.get("provenance") or {}
    rows.append(f"cpu: {pa.get('cpu', 'not recorded')} ({pa.get('threads', '?')} threads) -> "
                f"{pb.get('cpu', '?')} ({pb.get('threads', '?')} threads)")
    return rows


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _stages(folder: Path, metrics: dict[str, Any]) -> list[Path]:
    """The stage folders of a staged recipe's final run (``1-w8``, ``2-w4`` ...), in order; [] otherwise."""
    if not metrics.get("stages"):
        return []
    found = [p for p in folder.iterdir() if _STAGE.match(p.name) and (p / "config.yaml").is_file()]
    return sorted(found, key=lambda p: int(_STAGE.match(p.name).group(1)))


def _is_path(source: str) -> bool:
    """A teacher/model source that names a folder (as amqs.train.qat.load_teacher reads it)."""
    return Path(source).is_dir() or source.startswith((".", "/", "~")) or "/" in source


def _data_input(cfg: DictConfig) -> tuple[Optional[str], Input]:
    task = cfg.data.task
    saved = cfg.data.glue_dir
    if not saved:
        return None, Input("data", f"glue/{task}", True, note="HF hub: not checked")

    def missing(root: str) -> Optional[Path]:
        # The GLUE folder of the task (SST-2 for sst2, MRPC for mrpc), found without importing amqs.data
        # (transformers: seconds).
        base = Path(root).expanduser()
        folder = next((p for p in sorted(base.glob("*")) if p.name.lower().replace("-", "") == task), base / task)
        files = [folder / f for f in ("train.tsv", "dev.tsv")]
        return next((f for f in files if not f.is_file()), None)

    gone = missing(saved)
    if gone is None:
        return saved, Input("data.glue_dir", saved, True)
    env = os.environ.get("AMQS_GLUE_DIR")
    if env and missing(env) is None:
        return env, Input("data.glue_dir", saved, True, note=f"not here; using $AMQS_GLUE_DIR={env}: the same rows")
    return saved, Input("data.glue_dir", saved, False, note=f"{gone} not found; set AMQS_GLUE_DIR")


def _model_inputs(cfg: DictConfig, role: str) -> list[Input]:
    """The teacher, the pretrained model (when a path), init_from, assignment and search space of a run."""
    out = []
    if role == "teacher" or cfg.get("reinit"):
        src = cfg.model.source
        if _is_path(src):
            out.append(_file_input("model.source", Path(src), folder=True))
    if role != "teacher":
        out.append(_weights_input("teacher.source", Path(cfg.teacher.source)) if _is_path(cfg.teacher.source)
                   else Input("teacher.source", cfg.teacher.source, True, note="HF hub id: not checked"))
    if cfg.get("init_from"):
        out.append(_weights_input("init_from", Path(cfg.init_from) / "student.pt"))
    if cfg.get("assignment"):
        out.append(_file_input("assignment", Path(cfg.assignment)))
    if "search" in cfg and role in ("search", "study"):
        from amqs.search.space import load_space

        try:
            load_space(cfg.search.space)
            out.append(Input("search.space", cfg.search.space, True))
        except (FileNotFoundError, ValueError) as e:
            out.append(Input("search.space", cfg.search.space, False, note=str(e).splitlines()[0]))
    return out


def _file_input(what: str, path: Path, folder: bool = False) -> Input:
    return Input(what, str(path), path.is_dir() if folder else path.is_file())


def _weights_input(what: str, path: Path) -> Input:
    """Weights a run reads: a teacher's ``model/`` folder or a run's ``student.pt`` (git keeps neither).

    A missing one is reproducible when a recorded run makes it: its command is the note. A teacher folder
    outside any recorded teacher (e.g. the shared one) is a plain input.
    """
    if path.exists():
        return Input(what, str(path), True)
    if path.name == "student.pt" and (path.parent / "metrics.json").is_file():
        command = _read_json(path.parent / "metrics.json").get("command", "?")
        return Input(what, str(path), False, weights=True, note=f"made by: {command}")
    if path.name == "model" and path.parent.parent.name == "teachers":
        name = path.parent.name
        record = next((p for p in (path.parent / "metrics.json", REPO_ROOT / "results" / "teachers" / name /
                                   "metrics.json") if p.is_file()), None)
        note = f"made by: {_read_json(record).get('command', '?')}" if record else "made by amqs-finetune"
        shared = shared_models_dir() / name
        if shared.is_dir():
            note += f"; or link the shared copy {shared} there"
        return Input(what, str(path), False, weights=True, note=note)
    return Input(what, str(path), False)


def _placed(cfg: DictConfig, plan: Plan, out: Path) -> DictConfig:
    """A copy of ``cfg`` whose run folder is ``out`` (beside the original); nothing else changes but data.glue_dir
    when the recorded one is not on this machine."""
    below = "teachers" if plan.role == "teacher" else "runs"
    anchor = next((p for p in out.parents if p.name == below), None)
    if anchor is None:
        raise ReplayError(f"{plan.folder}: not inside a {below}/ folder, so its run folder cannot be placed beside it")
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.paths.results_dir = str(anchor.parent)
        cfg.name = out.relative_to(anchor).as_posix()
        cfg.overwrite = False
        cfg.data.glue_dir = plan.glue_dir
    return cfg


def _replay_staged(plan: Plan, cfg: DictConfig, command: str) -> dict[str, Any]:
    """Every stage from its saved config, each from the previous replayed stage, then the final run."""
    from amqs.train.staged import run_stages

    configs, prev = [], None
    for i, stage in enumerate(_stages(plan.folder, plan.metrics)):
        c = _placed(read_run_config(stage).cfg, plan, Path(cfg.paths.results_dir) / "runs" / cfg.name / stage.name)
        with open_dict(c):
            c.init_from = prev if i else c.init_from  # the first stage starts where the recipe did
        configs.append(c)
        prev = str(run_dir(c))
    with open_dict(cfg):
        cfg.init_from = prev
    return run_stages([*configs, cfg], command)


def parser() -> argparse.ArgumentParser:
    """amqs-replay's command line."""
    p = argparse.ArgumentParser(prog="amqs-replay", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a run folder: results/teachers/<name>, results/runs/<name>[/retrain], "
                                          "results/studies/<name>[/runs/trial_NNNN]")
    p.add_argument("--check", action="store_true", help="check the config and inputs in seconds; train nothing")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.check else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s")
    with user_errors("amqs-replay"):
        if args.check:
            plan = check_run(args.run)
            print("\n".join(describe(plan)))
            weights = plan.missing_weights
            later = f" once the {len(weights)} missing weights (not in git) are remade" if weights else ""
            print(f"ok: replayable{later}")
            return
        old, new, out = replay_run(args.run)
    print(f"{args.run} -> {out}")
    print("\n".join(compare(old, new)))


if __name__ == "__main__":
    sys.exit(main())
