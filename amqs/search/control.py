"""Random controls of a finished search: did it learn *which* subgroups get which bits?

    python -m amqs.search.control results/runs/sst2-default-compression13.0 --seeds 0 1

For each seed, the search's derived ``bits.json`` is permuted within every matrix
(:func:`amqs.quant.shuffle_bits`; tied modules share a permutation), so per-matrix and total sizes are
exactly the search's, and retrained with the search's own retrain settings
(:func:`amqs.search.run.retrain_assignment`) in ``<--results>/runs/<run>/control-shuffled<seed>/`` (default
``outputs/``; never inside the searched run). A row per seed goes to ``<--results>/controls.csv`` next to the
searched model's numbers, and ``controls.md`` is rewritten (the measured table: ``--results results``). Resumable like any QAT run; a finished control is reused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from amqs.quant import BitAssignment, shuffle_bits
from amqs.report.tables import render_csv
from amqs.search.run import retrain_assignment
from amqs.search.space import load_space
from amqs.utils.cli import user_errors
from amqs.utils.run import check_results_dir, table_row, upsert_csv
from amqs.utils.runconfig import load_run_config

CONTROL_COLUMNS = ("task", "run", "model", "space", "seed", "encoder_bytes", "compression", "search_val_accuracy",
                   "dev_accuracy", "dev_f1", "searched_search_val_accuracy", "searched_dev_accuracy",
                   "train_examples", "epochs", "seconds", "threads", "cpu", "config_hash", "command")
NOTE = ("Each control permutes the search's derived bit-widths within every matrix (tied Q/K/V together), so its "
        "sizes equal the searched model's to the byte, then retrains exactly like the search's retrain (same "
        "teacher, data, loss, epochs). searched_* = the searched model after its retrain. Selection split: "
        "search-val; dev is reported only.")


def run_control(run: str | Path, seed: int, command: str = "", results: str | Path = "outputs") -> dict[str, Any]:
    """Train (or reuse) the seed's control of the finished search in ``run``, in
    ``<results>/runs/<run name>/control-shuffled<seed>/`` (never inside ``run``); returns its metrics."""
    run = Path(run)
    missing = [f for f in ("config.yaml", "bits.json", "metrics.json") if not (run / f).exists()]
    if missing:
        raise FileNotFoundError(f"{run} is not a finished amqs-search run: {', '.join(missing)} missing "
                                "(rerun its amqs-search command to finish it)")
    cfg = load_run_config(run)
    check_results_dir(results, smoke=cfg.smoke, model_source=cfg.model.source)
    cfg.paths.results_dir = str(results)  # the search run is an input: its control goes where it is asked
    space = load_space(cfg.search.space)
    assignment = shuffle_bits(BitAssignment.from_json(run / "bits.json"), seed, tie_key=space.tie_key)
    return retrain_assignment(cfg, assignment, f"control-shuffled{seed}", f"shuffled{seed}-{space.name}",
                              command=command)


def record_control(run: str | Path, seed: int, metrics: dict[str, Any], results: str | Path) -> Path:
    """Upsert the control's row of ``<results>/controls.csv`` (key: run, seed) and rewrite ``controls.md``."""
    run = Path(run)
    searched = json.loads((run / "metrics.json").read_text())
    row = {**table_row(metrics, CONTROL_COLUMNS), "run": run.name, "seed": seed,
           "space": searched["space"], "searched_dev_accuracy": searched["dev_accuracy"],
           "searched_search_val_accuracy": searched.get("search_val_accuracy")}
    path = Path(results) / "controls.csv"
    upsert_csv(path, row, key=("run", "seed"), columns=CONTROL_COLUMNS)
    return render_csv(path, title="Random controls of searched assignments", notes=[NOTE])


def parser() -> argparse.ArgumentParser:
    """The control's command line (also parses recorded commands in tests)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a finished amqs-search run folder (results/runs/<name>)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--results", type=Path, default=Path("outputs"),
                   help="folder of the control runs (runs/<run>/control-shuffled<seed>) and controls.csv "
                        "(default outputs/; the measured table: --results results)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    command = "python -m amqs.search.control " + " ".join(sys.argv[1:] if argv is None else argv)
    for seed in args.seeds:
        with user_errors("amqs.search.control"):
            m = run_control(args.run, seed, command=command, results=args.results)
            md = record_control(args.run, seed, m, args.results)
        print(f"{args.run} shuffled seed {seed}: dev {m['dev_accuracy']:.4f}, search-val "
              f"{m['search_val_accuracy']}, {m['encoder_bytes']} B -> {md}")


if __name__ == "__main__":
    main()
