"""Mixed-precision architecture search for BERT (AQ-BERT, Zhao et al. IJCAI 2021), DARTS-shaped.

Concepts, one file each: :mod:`~amqs.search.space` (search spaces as validated data),
:mod:`~amqs.search.supernet` (mixed-choice layers, relaxation), :mod:`~amqs.search.objective`
(size accounting, budget, size loss), :mod:`~amqs.search.architect` (the bilevel architecture
step) and :mod:`~amqs.search.derive` (logits -> BitAssignment, budget repair).

Example::

    space = load_space("aqbert")
    build_supernet(model, space)
    V = resolve_budget(Budget("compression", 8.0), model)
    architect = Architect(model, SearchObjective(V, lam=1.0), cfg=ArchitectConfig(warmup_epochs=1))
    wopt, schedule = weight_optimizer(model, lr=5e-5), TemperatureSchedule(t0=1.0, eta=2.0)
    ...  # search_step(...) per batch
    derived_assignment(model, space, Budget("compression", 8.0)).to_json("assignment.json")
"""

from amqs.search.architect import Architect, ArchitectConfig, search_step, weight_optimizer
from amqs.search.derive import derived_assignment, repair_choices
from amqs.search.objective import (
    BUDGET_KINDS,
    Budget,
    SearchObjective,
    SizeBase,
    argmax_size_bits,
    ce_loss,
    expected_size_bits,
    resolve_budget,
    size_base,
    size_bounds_bits,
    size_loss,
)
from amqs.search.space import (
    CHOICES,
    Choice,
    GroupSpec,
    SearchedModule,
    SearchSpace,
    SpaceError,
    SubgroupSpec,
    list_spaces,
    load_space,
    lookup_choice,
    space_from_dict,
)
from amqs.search.supernet import (
    MODES,
    SupernetLinear,
    TemperatureSchedule,
    arch_entropy,
    arch_groups,
    arch_parameters,
    build_supernet,
    resample,
    set_relaxation,
    supernet_modules,
    weight_parameters,
)

__all__ = [
    "BUDGET_KINDS",
    "CHOICES",
    "MODES",
    "Architect",
    "ArchitectConfig",
    "Budget",
    "Choice",
    "GroupSpec",
    "SearchObjective",
    "SearchSpace",
    "SearchedModule",
    "SizeBase",
    "SpaceError",
    "SubgroupSpec",
    "SupernetLinear",
    "TemperatureSchedule",
    "arch_entropy",
    "arch_groups",
    "arch_parameters",
    "argmax_size_bits",
    "build_supernet",
    "ce_loss",
    "derived_assignment",
    "expected_size_bits",
    "list_spaces",
    "load_space",
    "lookup_choice",
    "repair_choices",
    "resample",
    "resolve_budget",
    "search_step",
    "set_relaxation",
    "size_base",
    "size_bounds_bits",
    "size_loss",
    "space_from_dict",
    "supernet_modules",
    "weight_optimizer",
    "weight_parameters",
]
