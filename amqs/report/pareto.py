"""The Pareto front of an Optuna study and its tables (``pareto.csv``, ``pareto.md``; amqs-report).

:func:`pareto_front` is the pure computation (any number of objectives, each maximised or
minimised); :func:`trials_table` flattens a study (every trial, whatever its state) into one row per
trial with its parameters, objective values, run metrics and ``is_pareto``.

Example::

    pareto_front([(0.90, 3.1e6), (0.88, 2.0e6), (0.85, 2.5e6)], ["maximize", "minimize"])
    # [True, True, False]
    df = trials_table(load_study(Path("results/studies/sst2-minilm-l6-default")))
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

import optuna
import pandas as pd
from optuna.trial import TrialState

from amqs.outer.storage import STUDY_FILE, load_study
from amqs.report.tables import to_markdown
from amqs.search.diagnostics import MAX_ENTROPY_FRACTION, MAX_REPAIR_FRACTION, run_decision

DIRECTIONS = ("maximize", "minimize")
METRICS = ("search_val_accuracy", "search_val_f1", "dev_accuracy", "dev_f1", "encoder_bytes", "total_bytes",
           "fp32_encoder_bytes", "compression", "avg_bits", "pruned_fraction", "target_bytes", "repair_steps",
           "seconds", "entropy_fraction", "expected_over_budget", "repair_fraction", "undecided", "total_compression",
           "latency_ms", "reference_latency_ms", "latency_vs_int8")


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[bool]:
    """Which points no other point dominates (at least as good everywhere, better somewhere).

    Equal points do not dominate each other; a point with a NaN is never on the front.

    Example:
        >>> pareto_front([(0.9, 10), (0.8, 5), (0.7, 6), (0.9, 10)], ["maximize", "minimize"])
        [True, True, False, True]
    """
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"directions must be 'maximize' or 'minimize', got {bad}")
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]  # compare everything as "larger is better"
    pts = []
    for p in points:
        if len(p) != len(directions):
            raise ValueError(f"point {tuple(p)} has {len(p)} values for {len(directions)} directions")
        pts.append(None if any(math.isnan(float(v)) for v in p) else [s * float(v) for s, v in zip(sign, p)])

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [p is not None and not any(q is not None and dominates(q, p) for q in pts) for p in pts]


def study_info(study_dir: Path, study: Optional[optuna.Study] = None) -> dict:
    """``study.json`` of a study folder; where the folder has none (a machine with only the storage URL), the copy
    the study keeps in its user attribute ``amqs_info``; {} when neither exists."""
    path = Path(study_dir) / STUDY_FILE
    if path.exists():
        return json.loads(path.read_text())
    return dict(study.user_attrs.get("amqs_info") or {}) if study is not None else {}


def objective_names(study: optuna.Study) -> list[str]:
    names = study.user_attrs.get("amqs_objectives")
    return list(names) if names else [f"objective_{i}" for i in range(len(study.directions))]


def trials_table(study: optuna.Study, study_dir: Optional[Path] = None) -> pd.DataFrame:
    """One row per trial: number, state, ``param_<name>``, objective values, metrics, ``undecided``, ``is_pareto``.

    A complete trial recorded before the search's decision numbers gets them from its run folder under
    ``study_dir`` (:func:`amqs.search.diagnostics.run_decision`), when given.

    Example:
        >>> trials_table(study)[["number", "state", "encoder_mb", "is_pareto"]]   # doctest: +SKIP
    """
    names = objective_names(study)
    directions = [d.name.lower() for d in study.directions]
    trials = study.get_trials(deepcopy=False)
    param_names = list(dict.fromkeys(p for t in trials for p in t.params))
    rows = []
    for t in trials:
        row = {"number": t.number, "state": t.state.name}
        row.update({f"param_{p}": t.params.get(p) for p in param_names})
        values = t.values if t.state == TrialState.COMPLETE and t.values else [math.nan] * len(names)
        row.update({f"value_{n}": v for n, v in zip(names, values)})
        row.update({m: t.user_attrs.get(m) for m in METRICS})
        steps = [s for s, _ in t.user_attrs.get("intermediate", [])]
        row["last_step"] = max(steps) if steps else None
        row["duration_s"] = round(t.duration.total_seconds(), 1) if t.duration else None
        row["run_dir"] = t.user_attrs.get("run_dir")
        if row["undecided"] is None and t.state == TrialState.COMPLETE and study_dir is not None and row["run_dir"]:
            row.update(run_decision(Path(study_dir) / row["run_dir"]))  # trials that predate the diagnostics
        rows.append(row)
    df = pd.DataFrame(rows, columns=None if rows else ["number", "state"])
    if df.empty:
        df["is_pareto"] = pd.Series(dtype=bool)
        return df
    df["encoder_mb"] = pd.to_numeric(df.get("encoder_bytes"), errors="coerce") / 1e6
    done = df["state"] == "COMPLETE"
    df["is_pareto"] = False
    if done.any():
        points = df.loc[done, [f"value_{n}" for n in names]].to_numpy(dtype=float)
        df.loc[done, "is_pareto"] = pareto_front(points.tolist(), directions)
    return df


def chosen_trial(df: pd.DataFrame) -> Optional[int]:
    """The Pareto trial to draw: best search-val accuracy, the smaller encoder on a tie; None if none."""
    front = df[df["is_pareto"]]
    if front.empty:
        return None
    best = front.sort_values(["search_val_accuracy", "encoder_bytes"], ascending=[False, True])
    return int(best.iloc[0]["number"])


def load_baselines(path: Path, task: Optional[str], fp32_encoder_bytes: Optional[float]) -> pd.DataFrame:
    """Rows of ``results/baselines.csv`` of the same task and model (same fp32 encoder size), if any."""
    if not Path(path).exists() or not fp32_encoder_bytes:
        return pd.DataFrame()
    base = pd.read_csv(path)
    if task and "task" in base:
        base = base[base["task"] == task]
    # The CSV has no model column: a row belongs to this model when its fp32 encoder size matches.
    same = (base["encoder_bytes"] * base["compression"] - fp32_encoder_bytes).abs() <= 0.01 * fp32_encoder_bytes
    return base[same].reset_index(drop=True)


def render_markdown(study: optuna.Study, df: pd.DataFrame, info: dict, chosen: Optional[int],
                    images: Sequence[str], baselines: pd.DataFrame) -> str:
    """``pareto.md``: the study, its Pareto-optimal trials, every trial, the baselines and pictures."""
    names = objective_names(study)
    counts = df["state"].value_counts().to_dict() if not df.empty else {}
    dirs = ", ".join(f"{n} ({d.name.lower()})" for n, d in zip(names, study.directions))
    notes = [
        (f"Study `{study.study_name}` (task {info.get('task', '?')}, model {info.get('model', '?')}): "
         f"{len(df)} trials, " + ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items())) + "."),
        (f"Objectives: {dirs}. The front is computed on these (search-validation split); dev accuracy is only "
         "reported, never used to select. Encoder size: Transformer layers incl. quantization parameters "
         "(embeddings excluded); total: every stored tensor of the model; MB = 10^6 bytes. latency_ms (when an "
         "objective): the trial's export on ONNX Runtime, latency_vs_int8 its ratio to ORT int8 of the teacher "
         "timed alongside."),
        f"Drawn bit allocation: trial {chosen} (best search-val accuracy on the front)." if chosen is not None else
        "No complete trial yet.",
        ("undecided = the search did not decide (amqs.search.diagnostics): its final architecture entropy is over "
         f"{MAX_ENTROPY_FRACTION:g} of the maximum, or the budget repair changed over {MAX_REPAIR_FRACTION:.0%} of "
         "its choices; such a trial's allocation is the initial bias and the repair's, not the search's."),
        f"Command: `{info.get('command', '')}`",
    ]
    params = [c for c in df.columns if c.startswith("param_")]
    cols = ["number", *params, "encoder_bytes", "compression", "total_bytes", "total_compression", "latency_ms",
            "latency_vs_int8", "avg_bits", "pruned_fraction", "search_val_accuracy", "dev_accuracy", "entropy_fraction",
            "repair_fraction", "undecided"]
    cols = [c for c in cols if c in df.columns]
    front = (df[df["is_pareto"]].sort_values("encoder_bytes") if not df.empty else df)[cols].astype(object)
    for p in params:  # 3 significant digits: eps 0.0257 and lam 134.8 both stay readable
        front[p] = front[p].map(lambda v: v if isinstance(v, str) or pd.isna(v) else f"{v:.3g}")
    parts = [to_markdown(front, "Pareto-optimal trials", notes)]
    parts += [f"![{Path(i).stem}]({i})\n" for i in images]
    every = [c for c in ["number", "state", "encoder_bytes", "total_bytes", "latency_ms", "search_val_accuracy",
                         "dev_accuracy", "last_step",
                         "duration_s", "undecided", "is_pareto"] if c in df.columns]
    parts.append(to_markdown(df[every].astype(object), "All trials"))
    if not baselines.empty:
        parts.append(to_markdown(baselines, "Uniform baselines and literature recipes (results/baselines.csv, same task and model)",
                                 ["Dev accuracy after their own training budget (see the commands)."]))
    return "\n".join(parts)


__all__ = ["DIRECTIONS", "chosen_trial", "load_baselines", "load_study", "objective_names", "pareto_front",
           "render_markdown", "study_info", "trials_table"]
