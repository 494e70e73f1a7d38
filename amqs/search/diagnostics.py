"""Did the search decide? The three numbers every search run reports, and the rule that marks it undecided.

* ``entropy_fraction`` -- the mean entropy of the noise-free ``softmax(alpha)`` at the end, over its maximum
  (``log C``): 1 = the logits never moved from uniform, 0 = every subgroup committed to one choice;
* ``expected_over_budget`` -- ``E[C]`` under that distribution over the target bytes: far from 1, the weights
  were trained in a relaxed network of another size than the derived one;
* ``repair_fraction`` -- the share of decision units (logits rows; tied modules once) whose choice the budget
  repair changed after the argmax: far from 0, the repair, not the search, chose the architecture.

A run with ``entropy_fraction > 0.3`` or ``repair_fraction > 0.01`` is **undecided**: its tables and the Pareto
report say so. Methods without a distribution (``search.method=hawq``) have no entropy and need no repair.

Example:
    >>> is_undecided(0.9, 0.0), is_undecided(0.1, 0.002), is_undecided(None, 0.0)
    (True, False, False)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

MAX_ENTROPY_FRACTION = 0.3
MAX_REPAIR_FRACTION = 0.01
FIELDS = ("entropy_fraction", "expected_over_budget", "repair_fraction", "undecided")
# Not part of the rule, reported beside it: the share of units whose argmax the search moved from its start
# (its prior's allocation, or the most precise choice); near 0, the search returned its start.
MOVED = "moved_fraction"


def is_undecided(entropy_fraction: float | None, repair_fraction: float | None) -> bool:
    """The rule of the module docstring; an unknown (None) number does not make a run undecided."""
    return bool((entropy_fraction is not None and entropy_fraction > MAX_ENTROPY_FRACTION)
                or (repair_fraction is not None and repair_fraction > MAX_REPAIR_FRACTION))


def decision_metrics(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The diagnostics of a derived assignment's ``meta`` (see :func:`amqs.search.run.search`), with ``undecided``.

    Example:
        >>> decision_metrics({"entropy_fraction": 0.05, "expected_over_budget": 1.01, "repair_fraction": 0.0})
        {'entropy_fraction': 0.05, 'expected_over_budget': 1.01, 'repair_fraction': 0.0, 'undecided': False}
    """
    out = {k: meta.get(k) for k in FIELDS[:3]}
    out["undecided"] = is_undecided(out["entropy_fraction"], out["repair_fraction"])
    if MOVED in meta:
        out[MOVED] = meta[MOVED]
    return out


def run_decision(run: str | Path) -> dict[str, Any]:
    """The diagnostics of a finished search run folder, from its metrics.json; for runs that predate them,
    ``entropy_fraction`` is rebuilt from the last ``arch_entropy`` of ``search_log.jsonl`` over ``log C`` of the
    space's default choices (exact when no group overrides them), and the other two are unknown (None).

    Example:
        >>> run_decision("results/runs/sst2-default-compression13.0")  # doctest: +SKIP
        {'entropy_fraction': 0.93, 'expected_over_budget': None, 'repair_fraction': None, 'undecided': True}
    """
    run = Path(run)
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    if metrics.get("undecided") is not None:
        return {k: metrics.get(k) for k in FIELDS}
    meta: dict[str, Any] = {}
    log = run / "search_log.jsonl"
    if log.exists() and metrics.get("space"):
        from amqs.search.space import load_space

        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        choices = len(load_space(metrics["space"]).choices)
        if rows and "arch_entropy" in rows[-1] and choices > 1:
            meta["entropy_fraction"] = round(rows[-1]["arch_entropy"] / math.log(choices), 6)
    return decision_metrics(meta)


__all__ = ["FIELDS", "MOVED", "MAX_ENTROPY_FRACTION", "MAX_REPAIR_FRACTION", "decision_metrics", "is_undecided",
           "run_decision"]
