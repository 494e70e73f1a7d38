"""The fair comparison: methods at equal size budgets, with paired bootstrap intervals over the dev examples.

    python -m amqs.report.compare add results/runs/sst2-default-compression13.0 --method search-default \\
        --budget 13.0 --results results                       # a search run (its retrain's dev predictions)
    python -m amqs.report.compare add results/runs/sst2-qbert-compression13.0 --method qbert --budget 13.0 \\
        --results results                                     # a QAT run (amqs-qat)
    python -m amqs.report.compare add results/runs/sst2-default-compression13.0/control-shuffled0 \\
        --method shuffled --budget 13.0 --seed 0 --results results   # a random control (amqs.search.control)
    python -m amqs.report.compare render --results results   # compare.md + compare.png from compare.csv

``add`` reads a finished run folder (``metrics.json``, ``config.yaml`` and the per-example
``dev_predictions.json`` every QAT run writes; for a search run those of its ``retrain/``) and upserts its
row of ``<results>/compare.csv``, keyed by ``(task, budget_compression, method, seed)``; the seed is the run
config's ``train.seed`` unless ``--seed`` names another (several controls of one search share it). A debug
run (``debug=smoke``) or a random model is refused when ``--results`` is the repository's ``results/``.

``render`` writes ``<results>/compare.md``: per (task, budget), one line per method (seeds, mean dev accuracy,
F1 on MRPC, mean sizes) and the paired bootstrap 95% interval of (reference - method) in accuracy points:
each of 10,000 resamples of the dev examples (one fixed seed, the same indices for both methods) scores each
method by the mean over its seeds of its accuracy on the resample. The reference is every method whose name
starts with ``--reference`` (default ``search``). And ``compare.png``: dev accuracy against encoder and total
bytes, one row of panels per task.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from amqs.report.plots import save_figure
from amqs.report.tables import to_markdown
from amqs.search.diagnostics import run_decision
from amqs.train.qat import PREDICTIONS_FILE
from amqs.utils.cli import user_errors
from amqs.utils.run import check_results_dir, check_writable, relative_run, table_row, upsert_csv
from amqs.utils.runconfig import load_run_config

KEY = ("task", "budget_compression", "method", "seed")
COLUMNS = ("task", "budget_compression", "method", "seed", "run", "encoder_bytes", "total_bytes", "compression",
           "total_compression", "dev_accuracy", "dev_f1", "search_val_accuracy", "train_examples", "steps",
           "seconds", "init", "precision", "undecided", "entropy_fraction", "repair_fraction", "predictions",
           "config_hash", "command", "add_command")
SEARCH_ONLY = ("undecided", "entropy_fraction", "repair_fraction")  # a search run's (amqs.search.diagnostics)
RESAMPLES, BOOTSTRAP_SEED = 10_000, 0
MARGIN = 0.003  # a "win" or "loss" needs a mean difference of at least 0.3 accuracy points
TASK_NAMES = {"sst2": "SST-2", "mrpc": "MRPC"}
NOTES = (
    "Dev sets; every method's runs trained on the same data (see their commands). `seeds` = runs of the method "
    "(train.seed, or the control's seed); accuracy, F1, bytes and compression are means over them (`_sd`: "
    "the spread over seeds). compression = fp32 encoder bytes / encoder bytes (Transformer layers with their "
    "quantization parameters; embeddings excluded), total_compression the same for the whole model.",
    "`REF - method` = the reference's mean dev accuracy minus the method's, in points, with a paired bootstrap "
    f"95% interval: {RESAMPLES:,} resamples of the dev examples (seed {BOOTSTRAP_SEED}), the same indices for "
    "both methods, each scored by the mean over its seeds of its accuracy on the resample. `win`: the reference "
    f"is ahead by at least {100 * MARGIN:.1f} points and the interval excludes 0; `loss`: behind by as much, "
    "interval below 0; else `tie`. steps and seconds of a search row count its search and its retrain.",
)


# --- add: one finished run -> one row of compare.csv ---------------------------------------------------------

def run_row(run: str | Path, method: str, budget: float, results: str | Path,
            seed: int | None = None) -> dict[str, Any]:
    """The compare.csv row of a finished run folder (a QAT run, a search run or a control); checks everything
    before anything is written. Example::

        row = run_row("results/runs/sst2-w2a8", "w2a8", 13.0, "results")
    """
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run folder")
    metrics = _read_json(run / "metrics.json", "not a finished run: rerun its command to finish it")
    cfg = load_run_config(run)
    check_results_dir(results, smoke=bool(cfg.get("smoke")), model_source=str(cfg.model.source))
    search = (run / "retrain").is_dir() and "budget_kind" in metrics
    trained = run / "retrain" if search else run  # the QAT run whose student was evaluated
    pred_path = trained / PREDICTIONS_FILE
    record = _read_json(pred_path, "the run predates per-example dev predictions: rerun its command with "
                                   "overwrite=true to record them")
    _check_predictions(record, pred_path, metrics["dev_accuracy"])
    steps = _read_json(trained / "metrics.json", "not a finished run").get("steps") if search else metrics.get("steps")
    if search and steps is not None:
        steps += _search_steps(run)
    row = {**table_row(metrics, COLUMNS), "budget_compression": float(budget), "method": method,
           "seed": int(cfg.train.seed if seed is None else seed), "run": relative_run(run, results),
           "steps": steps, "init": cfg.train.get("init"), "precision": cfg.train.get("precision"),
           "predictions": _relative(pred_path, results)}
    decision = run_decision(run) if search else {}  # (rebuilt from the log for searches that predate them)
    for k in SEARCH_ONLY:
        row[k] = decision.get(k)
    return row


def add_run(run: str | Path, method: str, budget: float, results: str | Path = "outputs", seed: int | None = None,
            command: str = "") -> dict[str, Any]:
    """Upsert ``run``'s row of ``<results>/compare.csv`` (key: task, budget_compression, method, seed); returns it."""
    row = {**run_row(run, method, budget, results, seed), "add_command": command}
    path = Path(results) / "compare.csv"
    check_writable(path)
    upsert_csv(path, row, key=KEY, columns=COLUMNS)
    return row


def _read_json(path: Path, why: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: {why}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def _check_predictions(record: dict[str, Any], path: Path, dev_accuracy: float) -> None:
    """A predictions record must be the dev split's, one prediction per label, and agree with the run's accuracy."""
    labels, preds = record.get("labels"), record.get("predictions")
    if record.get("split") != "dev" or not isinstance(labels, list) or not isinstance(preds, list) or not labels:
        raise ValueError(f"{path}: expected {{'split': 'dev', 'labels': [...], 'predictions': [...]}}")
    if len(labels) != len(preds):
        raise ValueError(f"{path}: {len(preds)} predictions for {len(labels)} labels")
    acc = float(np.mean(np.asarray(labels) == np.asarray(preds)))
    if abs(acc - dev_accuracy) > 1e-5:
        raise ValueError(f"{path}: its predictions score {acc:.6f} but metrics.json records dev_accuracy "
                         f"{dev_accuracy:.6f}: they are not this run's (rerun it with overwrite=true)")


def _search_steps(run: Path) -> int:
    """A search run's supernet steps (its bits.json meta; 0 when absent)."""
    bits = run / "bits.json"
    return int(json.loads(bits.read_text()).get("meta", {}).get("search_steps") or 0) if bits.is_file() else 0


def _relative(path: Path, results: str | Path) -> str:
    """``path`` under ``results`` as the table stores it, else absolute (render reads it from any folder)."""
    try:
        return path.resolve().relative_to(Path(results).resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


# --- the paired bootstrap --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    """Reference minus method, in accuracy (fractions): the mean and the bootstrap interval."""

    mean: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """``win`` (reference ahead by >= MARGIN, interval above 0), ``loss`` (the mirror), else ``tie``."""
        if self.mean >= MARGIN and self.low > 0:
            return "win"
        if self.mean <= -MARGIN and self.high < 0:
            return "loss"
        return "tie"


def paired_bootstrap(reference: np.ndarray, other: np.ndarray, resamples: int = RESAMPLES,
                     seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> Difference:
    """Paired bootstrap of (reference - other) accuracy over the same examples.

    ``reference`` and ``other`` are 0/1 correctness matrices (seeds x examples; seed counts may differ). Each
    resample draws example indices with replacement, the same for both, and scores each method by the mean over
    its seeds of its accuracy on them (= the mean of its per-example correctness averaged over seeds).

    Example:
        >>> d = paired_bootstrap(np.ones((2, 50)), np.ones((1, 50)), resamples=100)
        >>> (d.mean, d.low, d.high, d.verdict)
        (0.0, 0.0, 0.0, 'tie')
    """
    reference, other = np.atleast_2d(reference).astype(float), np.atleast_2d(other).astype(float)
    if reference.shape[1] != other.shape[1]:
        raise ValueError(f"paired bootstrap: {reference.shape[1]} vs {other.shape[1]} examples")
    diff = reference.mean(0) - other.mean(0)  # per example
    n, rng, means = len(diff), np.random.default_rng(seed), []
    for start in range(0, resamples, 1000):  # chunks keep the index matrix small (1000 x n)
        idx = rng.integers(0, n, size=(min(1000, resamples - start), n))
        means.append(diff[idx].mean(1))
    low, high = np.quantile(np.concatenate(means), [(1 - level) / 2, (1 + level) / 2])
    return Difference(float(diff.mean()), float(low), float(high))


# --- render: compare.csv -> compare.md + compare.png -----------------------------------------------------------

def render(results: str | Path, reference: str = "search", resamples: int = RESAMPLES) -> Path:
    """Write ``<results>/compare.md`` and ``compare.png`` from ``compare.csv``; returns the Markdown's path."""
    results = Path(results)
    path = results / "compare.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: add runs first (python -m amqs.report.compare add RUN --method "
                                f"NAME --budget B --results {results})")
    df = pd.read_csv(path)
    if df.empty:
        raise ValueError(f"{path}: no rows; add runs first")
    parts = ["# Methods at equal size budgets\n\n" + "\n\n".join(NOTES) + "\n"]
    blocks = df.groupby(["task", "budget_compression"], sort=True)
    for (task, budget), block in sorted(blocks, key=lambda kv: (_task_order(kv[0][0]), kv[0][1])):
        parts.append(_block_markdown(task, budget, block, results, reference, resamples))
    parts.append(_commands(df))
    md = results / "compare.md"
    md.write_text("\n".join(parts))
    plot_compare(df, results / "compare.png")
    return md


def _task_order(task: str) -> tuple[int, str]:
    """SST-2 first, then MRPC, then any other task by name."""
    return (list(TASK_NAMES).index(task) if task in TASK_NAMES else len(TASK_NAMES), task)


def _block_markdown(task: str, budget: float, block: pd.DataFrame, results: Path, reference: str,
                    resamples: int) -> str:
    """One (task, budget): a line per method, references first, with its difference to each reference."""
    correct = _correctness(block, results)
    methods = sorted(block["method"].unique(), key=lambda m: (not m.startswith(reference), m))
    refs = [m for m in methods if m.startswith(reference)]
    lines = []
    for m in methods:
        rows = block[block["method"] == m]
        line = {"method": m, "seeds": len(rows), "dev_accuracy": rows["dev_accuracy"].mean(),
                "dev_accuracy_sd": _sd(rows["dev_accuracy"])}
        if task == "mrpc":
            line["dev_f1"] = rows["dev_f1"].mean()
        for c in ("encoder_bytes", "compression", "total_bytes", "total_compression"):
            line[c] = rows[c].mean()
        for r in refs:
            d = None if m == r else paired_bootstrap(correct[r], correct[m], resamples)
            line[f"{r} - method (points)"] = "" if d is None else f"{100 * d.mean:+.2f}"
            line[f"95% interval vs {r}"] = "" if d is None else f"[{100 * d.low:+.2f}, {100 * d.high:+.2f}]"
            line[f"vs {r}"] = "" if d is None else d.verdict
        line["note"] = _undecided_note(rows)
        lines.append(line)
    title = f"{TASK_NAMES.get(task, task)}, budget {budget:g}x encoder compression"
    notes = [] if refs else [f"No reference method here (a name starting with {reference!r}): no intervals."]
    return to_markdown(pd.DataFrame(lines), title, notes).replace("# ", "## ", 1)


def _correctness(block: pd.DataFrame, results: Path) -> dict[str, np.ndarray]:
    """Method -> its 0/1 correctness (seeds x dev examples), after checking that every run saw the same examples."""
    out: dict[str, list[np.ndarray]] = {}
    first: tuple[str, list[int]] | None = None
    for _, row in block.sort_values("seed").iterrows():
        path = Path(row["predictions"])
        path = path if path.is_absolute() else results / path
        record = _read_json(path, f"the predictions of {row['run']} (compare.csv row {row['method']}, seed "
                                  f"{row['seed']}): add the run again from where it lies")
        if first is None:
            first = (str(path), record["labels"])
        elif record["labels"] != first[1]:
            raise ValueError(f"{path}: its dev labels differ from {first[0]}'s: the runs did not see the same dev "
                             "examples (data.max_dev_examples?), so they cannot be paired")
        out.setdefault(row["method"], []).append(np.asarray(record["predictions"]) == np.asarray(record["labels"]))
    return {m: np.stack(v) for m, v in out.items()}


def _sd(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def _true(value: Any) -> bool:
    """Whether a compare.csv cell holds true (``undecided``: a bool in metrics.json, text once in the CSV; blank
    when the run did not record it).

    Example:
        >>> [_true(v) for v in (True, "True", "False", False, float("nan"), None, "")]
        [True, True, False, False, False, False, False]
    """
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return isinstance(value, (bool, np.bool_)) and bool(value)


def _undecided_note(rows: pd.DataFrame) -> str:
    if "undecided" not in rows:
        return ""
    seeds = [str(s) for s, u in zip(rows["seed"], rows["undecided"]) if _true(u)]
    return f"undecided (seed {', '.join(seeds)})" if seeds else ""


def _commands(df: pd.DataFrame) -> str:
    def texts(col: str) -> list[str]:  # each distinct non-blank value, in table order
        return list(dict.fromkeys(v for v in df[col] if isinstance(v, str) and v)) if col in df else []

    lines = ["# Commands", "", "The runs:", ""] + [f"- `{c}`" for c in texts("command")]
    adds = texts("add_command")
    if adds:
        lines += ["", "Their rows of compare.csv:", ""] + [f"- `{c}`" for c in adds]
    return "\n".join(lines) + "\n"


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def plot_compare(df: pd.DataFrame, path: Path) -> Path:
    """Dev accuracy (%) against encoder and total bytes (MB): a row of two panels per task, a marker per method,
    a colour per budget, one point per (method, budget) at its means with the spread over seeds as error bars.

    Example:
        >>> plot_compare(pd.read_csv("results/compare.csv"), Path("results/compare.png"))   # doctest: +SKIP
    """
    tasks = sorted(df["task"].unique(), key=_task_order)
    methods = sorted(df["method"].unique())
    budgets = sorted(df["budget_compression"].unique())
    colors = {b: f"C{i % 10}" for i, b in enumerate(budgets)}
    fig = Figure(figsize=(12, 4.6 * len(tasks)))
    for t, task in enumerate(tasks):
        rows = df[df["task"] == task]
        for j, (col, label) in enumerate((("encoder_bytes", "encoder"), ("total_bytes", "total"))):
            ax = fig.add_subplot(len(tasks), 2, 2 * t + j + 1)
            for (method, budget), g in rows.groupby(["method", "budget_compression"]):
                x, y = g[col] / 1e6, 100 * g["dev_accuracy"]
                ax.errorbar([x.mean()], [y.mean()], yerr=[_spread(y)], xerr=[_spread(x)], capsize=3, ls="none",
                            marker=MARKERS[methods.index(method) % len(MARKERS)], ms=7, color=colors[budget])
            ax.set_xlabel(f"{label} size (MB, 10^6 bytes)")
            ax.set_ylabel("dev accuracy (%)")
            ax.set_title(f"{TASK_NAMES.get(task, task)}: dev accuracy vs {label} bytes")
            ax.grid(alpha=0.3)
    handles = [fig.axes[0].plot([], [], MARKERS[i % len(MARKERS)], color="0.3", ls="none", label=m)[0]
               for i, m in enumerate(methods)]
    handles += [Patch(color=colors[b], label=f"budget {b:g}x") for b in budgets]
    fig.legend(handles=handles, loc="upper center", ncol=min(6, len(handles)), fontsize=8, bbox_to_anchor=(0.5, 1.02))
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_figure(fig, path)


def _spread(values: pd.Series) -> float:
    """The error bar: the standard deviation over seeds (0 for one seed)."""
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


# --- command line ---------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    """The comparison's command line (``add`` and ``render``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="upsert a finished run's row of <results>/compare.csv")
    add.add_argument("run", type=Path, help="a finished run folder (amqs-qat, amqs-search, or a control)")
    add.add_argument("--method", required=True, help="the method's name in the table (references: search...)")
    add.add_argument("--budget", type=float, required=True, help="the encoder compression budget, e.g. 13.0")
    add.add_argument("--seed", type=int, default=None, help="the row's seed (default: the run's train.seed)")
    add.add_argument("--results", type=Path, default=Path("outputs"),
                     help="folder of compare.csv (default outputs/; the measured table: --results results)")
    ren = sub.add_parser("render", help="write <results>/compare.md and compare.png from compare.csv")
    ren.add_argument("--results", type=Path, default=Path("outputs"))
    ren.add_argument("--reference", default="search",
                     help="methods whose name starts with this are the reference (default: search)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    with user_errors("amqs.report.compare"):
        if args.action == "add":
            command = "python -m amqs.report.compare " + " ".join(sys.argv[1:] if argv is None else argv)
            row = add_run(args.run, args.method, args.budget, args.results, args.seed, command)
            print(f"{args.results / 'compare.csv'}: {row['task']} budget {row['budget_compression']:g} "
                  f"{row['method']} seed {row['seed']}: dev {row['dev_accuracy']:.4f}, {row['encoder_bytes']} B")
        else:
            print(render(args.results, args.reference))


if __name__ == "__main__":
    main()
