"""The decision numbers of a search run, the undecided rule, and their rebuild for runs that predate them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from amqs.search.diagnostics import decision_metrics, is_undecided, run_decision


@pytest.mark.parametrize("entropy, repair, undecided", [(0.31, 0.0, True), (0.3, 0.01, False), (0.1, 0.011, True),
                                                        (None, None, False)])
def test_the_undecided_rule(entropy: float | None, repair: float | None, undecided: bool) -> None:
    assert is_undecided(entropy, repair) is undecided


def test_decision_metrics_keep_the_moved_fraction_when_known() -> None:
    meta = {"entropy_fraction": 0.02, "expected_over_budget": 1.0, "repair_fraction": 0.0, "moved_fraction": 0.3}
    assert decision_metrics(meta) == {**meta, "undecided": False}


def test_run_decision_from_metrics_or_rebuilt_from_an_old_log(tmp_path: Path) -> None:
    new = tmp_path / "new"
    new.mkdir()
    recorded = {"entropy_fraction": 0.05, "expected_over_budget": 1.0, "repair_fraction": 0.02, "undecided": True}
    (new / "metrics.json").write_text(json.dumps({**recorded, "space": "default"}))
    assert run_decision(new) == recorded
    old = tmp_path / "old"  # a run recorded before the numbers: its log's last entropy over log(4 choices)
    old.mkdir()
    (old / "metrics.json").write_text(json.dumps({"space": "default"}))
    rows = [{"step": 1, "arch_entropy": 1.3}, {"step": 2, "arch_entropy": 0.5 * math.log(4)}]
    (old / "search_log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert run_decision(old) == {"entropy_fraction": 0.5, "expected_over_budget": None, "repair_fraction": None,
                                 "undecided": True}
    assert run_decision(tmp_path / "missing")["undecided"] is False  # nothing known: not marked
