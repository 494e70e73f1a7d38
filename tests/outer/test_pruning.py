from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from amqs.config import OuterPrunerConfig
from amqs.finetune import run as finetune
from amqs.outer.pruning import (
    INTERMEDIATE_ATTR,
    SIZE_ATTR,
    ProgressReporter,
    intermediate_values,
    make_pruner,
    pareto_median_prune,
)
from amqs.search.run import run_search
from tests.conftest import compose_cfg

DONE = [({10: 0.30, 20: 0.25}, 100.0), ({10: 0.35, 20: 0.30}, 90.0), ({10: 0.10, 20: 0.05}, 500.0)]


def test_pareto_median_compares_with_no_larger_finished_trials() -> None:
    # The 500-byte trial trains far better but is larger: it says nothing about a 120-byte trial.
    assert pareto_median_prune({10: 0.50}, 120.0, DONE, step=10)
    assert not pareto_median_prune({10: 0.32}, 120.0, DONE, step=10)  # between the two: median 0.325
    assert not pareto_median_prune({10: 0.50}, 95.0, DONE, step=10)  # only one smaller trial < n_startup_trials
    assert pareto_median_prune({10: 0.50}, 95.0, DONE, step=10, n_startup_trials=1)
    assert not pareto_median_prune({10: 0.50}, 120.0, DONE, step=10, n_warmup_steps=11)
    assert not pareto_median_prune({10: 0.50}, 120.0, DONE, step=15)  # nobody reported step 15
    # The best value so far counts (a noisy last batch alone does not prune) ...
    assert not pareto_median_prune({10: 0.20, 20: 0.40}, 120.0, DONE, step=20)
    # ... and a trial with nothing finite has diverged.
    assert pareto_median_prune({10: float("nan")}, 120.0, DONE, step=10)


def test_median_pruners_need_one_objective() -> None:
    with pytest.raises(ValueError, match="pareto_median"):
        make_pruner(OuterPrunerConfig(name="median"), n_objectives=2)
    with pytest.raises(ValueError, match="must be one of"):
        make_pruner(OuterPrunerConfig(name="hyperband"), n_objectives=1)
    assert isinstance(make_pruner(OuterPrunerConfig(name="median"), 1), optuna.pruners.PercentilePruner)
    assert isinstance(make_pruner(OuterPrunerConfig(name="pareto_median"), 2), optuna.pruners.NopPruner)


def _finished(study: optuna.Study, values: dict[int, float], size: float) -> None:
    study.add_trial(create_trial(values=[0.8, size] if len(study.directions) == 2 else [0.8],
                                 user_attrs={INTERMEDIATE_ATTR: [[s, v] for s, v in values.items()], SIZE_ATTR: size}))


def _two_objective_study_after(done):
    """A (accuracy, size) study with the ``done`` trials finished, a new trial and its reporter (window 2)."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for values, size in done:
        _finished(study, values, size)
    trial = study.ask()
    return study, trial, ProgressReporter(study, trial, OuterPrunerConfig(window=2))


def test_reporter_stores_smoothed_values_and_prunes_a_multi_objective_trial() -> None:
    study, trial, report = _two_objective_study_after(DONE)
    report(5, {"train_loss": 0.6, "target_bytes": 120.0})  # nobody else reported step 5
    with pytest.raises(optuna.TrialPruned, match="step 10"):
        report(10, {"train_loss": 0.4, "target_bytes": 120.0})  # mean of the last 2: 0.5 > median 0.325
    frozen = study.get_trials()[-1]
    assert intermediate_values(frozen) == {5: 0.6, 10: 0.5}
    assert frozen.user_attrs[SIZE_ATTR] == 120.0
    study.tell(trial, state=TrialState.PRUNED)
    with pytest.raises(KeyError, match="train_los"):
        ProgressReporter(study, study.ask(), OuterPrunerConfig(metric="train_los"))(5, {"train_loss": 0.1})


def test_reporter_judges_a_trial_only_while_its_architecture_meets_the_budget() -> None:
    study, trial, report = _two_objective_study_after(DONE)
    over = {"in_budget": 0.0, "argmax_bytes": 300.0, "target_bytes": 120.0}
    report(5, {"train_loss": 0.1, **over})  # a larger model's low loss: not reported, not smoothed in
    report(10, {"train_loss": 0.9, **over})  # would be pruned (0.9 > median 0.325), but it is over budget
    assert intermediate_values(study.get_trials()[-1]) == {}
    report(15, {"train_loss": 0.3, "in_budget": 1.0, "argmax_bytes": 121.0, "target_bytes": 120.0})
    with pytest.raises(optuna.TrialPruned, match="step 20"):  # (0.3 + 0.5) / 2 = 0.4 > median 0.275
        report(20, {"train_loss": 0.5, "in_budget": 0.0, "argmax_bytes": 90.0, "target_bytes": 120.0})
    assert intermediate_values(study.get_trials()[-1]) == {15: 0.3, 20: 0.4}
    assert study.get_trials()[-1].user_attrs[SIZE_ATTR] == 120.0


def test_a_trial_that_never_meets_its_budget_is_pruned_at_the_deadline() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])  # no finished trial: only the deadline judges
    trial = study.ask()
    report = ProgressReporter(study, trial, OuterPrunerConfig(budget_deadline=0.75), search_epochs=0.5)
    over = {"train_loss": 0.1, "in_budget": 0.0, "argmax_bytes": 300.0, "target_bytes": 120.0}
    report(5, {**over, "epoch": 0.3})  # 60% of the search: still allowed to get there
    with pytest.raises(optuna.TrialPruned, match="outside its budget .*budget_deadline"):
        report(10, {**over, "epoch": 0.375})
    unlimited = ProgressReporter(study, study.ask(), OuterPrunerConfig(), search_epochs=0.5)
    unlimited(10, {**over, "epoch": 0.5})  # no deadline configured: never pruned for its size


def test_single_objective_uses_optunas_pruner_on_the_loss() -> None:
    # Maximised accuracy: the reported loss is negated so Optuna's median pruner reads it the right way.
    study = optuna.create_study(direction="maximize", pruner=make_pruner(OuterPrunerConfig(name="median",
                                                                                         n_startup_trials=1), 1))
    first = study.ask()
    ProgressReporter(study, first, OuterPrunerConfig(name="median", window=1))(10, {"train_loss": 0.3,
                                                                                  "target_bytes": 1.0})
    study.tell(first, 0.9)
    better = ProgressReporter(study, study.ask(), OuterPrunerConfig(name="median", window=1))
    better(10, {"train_loss": 0.2, "target_bytes": 1.0})  # not pruned
    worse = ProgressReporter(study, study.ask(), OuterPrunerConfig(name="median", window=1))
    with pytest.raises(optuna.TrialPruned):
        worse(10, {"train_loss": 0.6, "target_bytes": 1.0})


def test_run_search_stops_when_on_progress_raises(tmp_path: Path, glue_dir: Path) -> None:
    overrides = ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}"]
    finetune(compose_cfg("finetune", overrides))
    seen: list[int] = []

    def prune_at_second_log(step: int, row: dict) -> None:
        seen.append(step)
        assert {"train_loss", "expected_bytes", "target_bytes"} <= set(row)
        if len(seen) == 2:
            raise optuna.TrialPruned("hopeless")

    cfg = compose_cfg("search", overrides)
    with pytest.raises(optuna.TrialPruned, match="hopeless"):
        run_search(cfg, on_progress=prune_at_second_log)
    assert seen == [2, 4]  # debug=smoke logs every 2 steps
    out = tmp_path / "runs" / cfg.name
    assert [json.loads(line)["step"] for line in (out / "search_log.jsonl").read_text().splitlines()] == [2, 4]
    assert not (out / "bits.json").exists() and not (out / "metrics.json").exists()
