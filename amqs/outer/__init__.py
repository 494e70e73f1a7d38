"""The Optuna outer loop around the supernet search (issue 5).

:mod:`~amqs.outer.space` (the tuned parameters as validated data), :mod:`~amqs.outer.pruning`
(intermediate values, pruning for one or several objectives), :mod:`~amqs.outer.storage` (SQL and journal
storages with heartbeats), :mod:`~amqs.outer.artifacts` (copies of each trial's files any machine can read) and
:mod:`~amqs.outer.study` (resumption, workers, trials). ``amqs-search outer=optuna`` runs it; ``amqs-report``
draws its Pareto front.

Example::

    from amqs.outer import run_study
    summary = run_study(cfg)          # cfg composed with outer=optuna
"""

from amqs.outer.pruning import (
    PRUNERS,
    ProgressReporter,
    make_pruner,
    pareto_median_prune,
)
from amqs.outer.space import (
    PARAM_TYPES,
    Param,
    ParamSpace,
    SpaceError,
    parse_param,
    parse_space,
)
from amqs.outer.study import (
    OBJECTIVES,
    resolve_objectives,
    run_study,
    study_dir,
    trial_config,
)

__all__ = [
    "OBJECTIVES",
    "PARAM_TYPES",
    "PRUNERS",
    "Param",
    "ParamSpace",
    "ProgressReporter",
    "SpaceError",
    "make_pruner",
    "pareto_median_prune",
    "parse_param",
    "parse_space",
    "resolve_objectives",
    "run_study",
    "study_dir",
    "trial_config",
]
