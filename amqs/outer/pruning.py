"""Intermediate values and pruning of study trials, for one and for several objectives.

Every trial reports, at each search log point, a smoothed value of ``outer.pruner.metric``
(lower is better; the supernet's ``train_loss`` by default): always as the trial's user attribute
``intermediate`` (``[[step, value], ...]``), and through ``Trial.report`` too in single-objective
studies, where Optuna's own pruners (``median``, ``successive_halving``) decide. Those read
intermediate values in the study's direction, so a maximised objective gets the negated loss.

Optuna refuses ``Trial.report`` and ``Trial.should_prune`` in multi-objective studies
(``NotImplementedError``: there is no single value to rank). ``pareto_median`` is our rule for
them (it works for one objective too): a trial is pruned at step ``s`` when its best value so far
is worse than the median (``percentile``) of the values at step ``s`` of the COMPLETE trials whose
size target is no larger than its own. Those trials are already at least as small; when this one
also trains worse than most of them, it is heading for a point they dominate. Whatever the rule,
``outer.pruner.budget_deadline`` stops a trial whose argmax architecture is still outside its budget
at that fraction of the search (in the quick study, trials 3 and 5 derived all-8-bit argmaxes and the
repair made 8,287 / 8,309 of their choices; trial 5 ended on the reported front).

Values are reported only at log points where the supernet's argmax architecture meets the trial's
budget (the search log's ``in_budget``, or smaller than the target). Before that, its loss is the loss
of a larger model: in the quick SST-2 study the two trials with a tiny size penalty (lambda 1.3) had the
lowest search loss because their supernets stayed near 8 bits, then needed the most repair and ended
worst on search-val and dev, while a larger-budget trial (4.9 MB) was pruned at step 20 by a margin of
0.02 on a 3-batch mean (results/studies/quick-sst2-minilm-l6-heldout, trials 3, 4, 5). The smoothing
window restarts whenever the architecture leaves the budget.

Example::

    progress = ProgressReporter(study, trial, cfg.outer.pruner)
    run_search(trial_cfg, on_progress=progress)        # raises optuna.TrialPruned when hopeless
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import optuna
from omegaconf import DictConfig
from optuna.trial import TrialState

PRUNERS = ("none", "pareto_median", "median", "successive_halving")
INTERMEDIATE_ATTR = "intermediate"  # user attribute: [[step, value], ...]
SIZE_ATTR = "target_bytes"  # user attribute: the trial's budget in encoder bytes


def make_pruner(cfg: DictConfig | Any, n_objectives: int) -> optuna.pruners.BasePruner:
    """The Optuna pruner the study is created with (a no-op unless median / successive halving).

    Example:
        >>> from amqs.config import OuterPrunerConfig
        >>> type(make_pruner(OuterPrunerConfig(name="pareto_median"), 2)).__name__
        'NopPruner'
    """
    if cfg.name not in PRUNERS:
        raise ValueError(f"outer.pruner.name={cfg.name!r}; must be one of {PRUNERS}")
    if cfg.name in ("median", "successive_halving") and n_objectives > 1:
        raise ValueError(
            f"outer.pruner.name={cfg.name} needs a single objective: Optuna refuses Trial.should_prune in "
            "multi-objective studies. Use outer.pruner.name=pareto_median (any number of objectives), or one "
            "objective (outer.objectives=[search_val_accuracy]) with a fixed budget."
        )
    if cfg.window < 1:
        raise ValueError(f"outer.pruner.window must be >= 1, got {cfg.window}")
    if cfg.name == "median":
        return optuna.pruners.PercentilePruner(cfg.percentile, n_startup_trials=cfg.n_startup_trials,
                                               n_warmup_steps=cfg.n_warmup_steps)
    if cfg.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=cfg.min_resource,
                                                      reduction_factor=cfg.reduction_factor)
    return optuna.pruners.NopPruner()  # pareto_median is applied by ProgressReporter; none: report only


def pareto_median_prune(own: Mapping[int, float], own_size: float,
                        finished: Iterable[tuple[Mapping[int, float], float]], *, step: int,
                        percentile: float = 50.0, n_startup_trials: int = 2, n_warmup_steps: int = 0) -> bool:
    """Whether a trial should stop at ``step`` (values: lower is better).

    ``own``: the trial's intermediate values by step; ``own_size``: its size target;
    ``finished``: (values by step, size target) of the COMPLETE trials.

    Example:
        >>> done = [({10: 0.30}, 100.0), ({10: 0.35}, 90.0), ({10: 0.20}, 200.0)]
        >>> pareto_median_prune({10: 0.50}, 120.0, done, step=10)   # worse than both smaller trials
        True
        >>> pareto_median_prune({10: 0.25}, 120.0, done, step=10)
        False
    """
    if step < n_warmup_steps:
        return False
    ref = [values[step] for values, size in finished if size <= own_size * (1 + 1e-9) and step in values]
    if len(ref) < max(1, n_startup_trials):
        return False
    seen = [v for s, v in own.items() if s <= step and np.isfinite(v)]
    if not seen:
        return True  # nothing finite so far: diverged
    return min(seen) > float(np.percentile(ref, percentile))


def meets_budget(row: Mapping[str, Any]) -> bool:
    """Whether the architecture the search would derive now is within (or under) the trial's budget.

    Example:
        >>> meets_budget({"in_budget": 0.0, "argmax_bytes": 5e6, "target_bytes": 3e6})
        False
        >>> meets_budget({"in_budget": 0.0, "argmax_bytes": 2e6, "target_bytes": 3e6})   # smaller is fine
        True
    """
    if "in_budget" not in row:
        return True
    return row["in_budget"] >= 1.0 or row.get("argmax_bytes", float("inf")) <= row["target_bytes"]


def past_deadline(row: Mapping[str, Any], deadline: float | None, search_epochs: float | None) -> bool:
    """Whether the search has passed ``deadline`` (a fraction of its ``search_epochs``) at this log row.

    Example:
        >>> past_deadline({"epoch": 0.4}, 0.75, 0.5), past_deadline({"epoch": 0.3}, 0.75, 0.5)
        (True, False)
    """
    if deadline is None or not search_epochs or "epoch" not in row:
        return False
    return float(row["epoch"]) >= deadline * search_epochs


def intermediate_values(trial: optuna.trial.FrozenTrial) -> dict[int, float]:
    """A trial's reported values by step (from the user attribute, so multi-objective studies have them)."""
    return {int(s): float(v) for s, v in trial.user_attrs.get(INTERMEDIATE_ATTR, [])}


class ProgressReporter:
    """The ``on_progress`` callback of one trial: smooth, store, and maybe prune.

    Example:
        >>> reporter = ProgressReporter(study, study.ask(), OuterPrunerConfig())  # doctest: +SKIP
        >>> reporter(10, {"train_loss": 0.4, "target_bytes": 3.2e6})             # doctest: +SKIP
    """

    def __init__(self, study: optuna.Study, trial: optuna.Trial, cfg: DictConfig | Any,
                 search_epochs: float | None = None) -> None:
        self.study, self.trial, self.cfg, self.search_epochs = study, trial, cfg, search_epochs
        self.single = len(study.directions) == 1
        # Optuna's pruners rank intermediate values in the study's direction; ours is a loss.
        self.sign = -1.0 if self.single and study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        self.recent: deque[float] = deque(maxlen=cfg.window)
        self.values: dict[int, float] = {}
        self.size: Optional[float] = None

    def __call__(self, step: int, row: Mapping[str, Any]) -> None:
        metric = self.cfg.metric
        if metric not in row:
            raise KeyError(f"outer.pruner.metric={metric!r} is not in the search log row; "
                           f"keys: {sorted(k for k, v in row.items() if isinstance(v, (int, float)))}")
        if self.size is None:
            self.size = float(row["target_bytes"])
            self.trial.set_user_attr(SIZE_ATTR, self.size)
        if not meets_budget(row):
            self.recent.clear()  # a larger model's loss: neither reported nor smoothed into later values
            deadline = getattr(self.cfg, "budget_deadline", None)
            if self.cfg.name != "none" and past_deadline(row, deadline, self.search_epochs):
                raise optuna.TrialPruned(f"the architecture is still outside its budget ({row['argmax_bytes']:.0f} "
                                         f"vs {row['target_bytes']:.0f} B) at epoch {row['epoch']:.3g} of "
                                         f"{self.search_epochs:g} (outer.pruner.budget_deadline)")
            return
        self.recent.append(float(row[metric]))
        value = float(np.mean(self.recent))
        self.values[step] = value
        self.trial.set_user_attr(INTERMEDIATE_ATTR, [[s, v] for s, v in self.values.items()])
        if self.cfg.name == "none":
            return
        if self.single:
            self.trial.report(self.sign * value, step)
        if self.cfg.name == "pareto_median":
            prune = self._pareto_median(step)
        else:
            prune = self.trial.should_prune()
        if prune:
            raise optuna.TrialPruned(f"{metric}={value:.4g} at step {step} ({self.cfg.name})")

    def _pareto_median(self, step: int) -> bool:
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        finished = [(intermediate_values(t), float(t.user_attrs[SIZE_ATTR])) for t in done if SIZE_ATTR in t.user_attrs]
        c = self.cfg
        return pareto_median_prune(self.values, self.size, finished, step=step, percentile=c.percentile,
                                   n_startup_trials=c.n_startup_trials, n_warmup_steps=c.n_warmup_steps)


__all__ = ["INTERMEDIATE_ATTR", "PRUNERS", "SIZE_ATTR", "ProgressReporter", "intermediate_values", "make_pruner",
           "meets_budget",
           "pareto_median_prune", "past_deadline"]
