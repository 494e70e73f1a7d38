"""Add finished search runs (their retrained model) to results/baselines.csv, one method row each.

    python bench/record_search.py results/runs/sst2-recipe-aqbert-compression13.0   # method aqbert-compression13.0

The method is the run name without its ``<task>-`` and ``recipe-`` prefixes (or ``--method``); the row's
numbers are the retrain's (the model that is evaluated), its epochs say "search S + retrain R" and its
command is the search's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from amqs.qat import record
from amqs.utils.run import relative_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="results/runs/<name> folders of finished searches")
    p.add_argument("--method", default=None, help="the method name (default: from the run name)")
    p.add_argument("--results", type=Path, default=Path("results"), help="folder of baselines.csv")
    args = p.parse_args()
    for run in args.runs:
        top = json.loads((run / "metrics.json").read_text())
        retrain = json.loads((run / "retrain" / "metrics.json").read_text())
        method = args.method or run.name.removeprefix(f"{top['task']}-").removeprefix("recipe-")
        record(retrain, args.results, run=relative_run(run, args.results), method=method, command=top["command"],
               epochs=f"search {top['search_epochs']} + retrain {top['retrain_epochs']}", seconds=top["seconds"],
               config_hash=top["config_hash"])
        print(f"{run}: {method} dev {retrain['dev_accuracy']:.4f} at {retrain['compression']}x")


if __name__ == "__main__":
    main()
