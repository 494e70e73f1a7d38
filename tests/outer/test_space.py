from __future__ import annotations

import optuna
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig

from amqs.outer.space import SpaceError, parse_param, parse_space
from tests.conftest import compose_cfg


@pytest.fixture(scope="module")
def cfg() -> DictConfig:
    return compose_cfg("search", ["outer=optuna"])


def test_the_optuna_preset_is_a_valid_space(cfg: DictConfig) -> None:
    space = parse_space(cfg.outer.params, cfg)
    assert {p.name: p.key for p in space.params} == {
        "budget": "budget.value", "lam": "search.lam", "eps": "search.eps", "t0": "search.t0", "eta": "search.eta",
        "arch_lr": "search.arch.lr"}
    lam = next(p for p in space.params if p.name == "lam")
    assert (lam.low, lam.high, lam.log) == (1.0, 200.0, True)


def test_suggest_returns_config_overrides(cfg: DictConfig) -> None:
    space = parse_space({"lam": {"key": "search.lam", "low": 1, "high": 9, "log": True},
                         "steps": {"key": "search.arch.warmup_steps", "type": "int", "low": 0, "high": 4},
                         "relax": {"key": "search.relaxation", "type": "categorical",
                                   "choices": ["gumbel", "softmax"]}}, cfg)
    values = space.suggest(optuna.trial.FixedTrial({"lam": 3.0, "steps": 2, "relax": "softmax"}))
    assert values == {"search.lam": 3.0, "search.arch.warmup_steps": 2, "search.relaxation": "softmax"}
    sampled = space.suggest(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask())
    assert 1 <= sampled["search.lam"] <= 9 and isinstance(sampled["search.arch.warmup_steps"], int)


@pytest.mark.parametrize("spec, message", [
    ({"type": "uniform", "low": 0, "high": 1}, "must be one of"),
    ({"low": 1.0}, "needs `low` and `high`"),
    ({"low": 2, "high": 1}, "must be < high"),
    ({"low": 0, "high": 1, "log": True}, "needs low > 0"),
    ({"low": 0.1, "high": 1, "log": True, "step": 0.1}, "cannot be combined with log"),
    ({"type": "int", "low": 0.5, "high": 3}, "integer low/high"),
    ({"low": "a", "high": 1}, "finite number"),
    ({"type": "categorical"}, "non-empty list `choices`"),
    ({"type": "categorical", "choices": [1, 1]}, "distinct"),
    ({"type": "categorical", "choices": [1, 2], "low": 0}, "takes `choices` only"),
    ({"low": 0, "high": 1, "choices": [1]}, "for type: categorical only"),
    ({"low": 0, "high": 1, "hgh": 2}, "unknown field"),
])
def test_bad_specs_fail_clearly(spec: dict, message: str) -> None:
    with pytest.raises(SpaceError, match=message) as e:
        parse_param("p", {"key": "search.lam", **spec})
    assert "outer.params.p" in str(e.value)


def test_keys_are_checked_against_the_config(cfg: DictConfig) -> None:
    with pytest.raises(SpaceError, match="'search.lamm' is not a key"):
        parse_param("lam", {"key": "search.lamm", "low": 1, "high": 2}, cfg)
    with pytest.raises(SpaceError, match="config group, not a value"):
        parse_param("arch", {"key": "search.arch", "low": 1, "high": 2}, cfg)
    with pytest.raises(SpaceError, match="may not change paths"):
        parse_param("dir", {"key": "paths.results_dir", "type": "categorical", "choices": ["a"]}, cfg)
    with pytest.raises(SpaceError, match="same key"):
        parse_space({"a": {"key": "search.lam", "low": 1, "high": 2}, "b": {"key": "search.lam", "low": 3, "high": 4}})
    with pytest.raises(SpaceError, match="empty"):
        parse_space({})


def test_a_typo_in_the_yaml_fails_at_compose() -> None:
    with pytest.raises(ConfigCompositionException, match="outer.params.lam.hgh"):
        compose_cfg("search", ["outer=optuna", "outer.params.lam.hgh=3"])
