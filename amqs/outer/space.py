"""The Optuna study's search space as data: ``name -> {key, type, low, high, log, step, choices}``.

``conf/outer/*.yaml`` lists the tuned hyper-parameters under ``params``; :func:`parse_space`
validates them (against the composed search config, so a key that does not exist fails before
any trial) and :meth:`ParamSpace.suggest` samples one trial's values as config overrides.

Example::

    space = parse_space({"lam": {"key": "search.lam", "type": "float", "low": 1, "high": 200, "log": True}}, cfg)
    overrides = space.suggest(trial)          # {"search.lam": 37.2}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

import optuna
from omegaconf import DictConfig, OmegaConf

from amqs.config import ParamSpec

PARAM_TYPES = ("float", "int", "categorical")
# Keys a trial must not change: where it writes, and the study itself.
_RESERVED = ("outer", "paths", "name", "overwrite", "teacher")
_SCALARS = (type(None), bool, int, float, str)


class SpaceError(ValueError):
    """A bad parameter space; the message names the parameter (outer.params.<name>) and the fix."""


@dataclass(frozen=True)
class Param:
    """One validated parameter: the Optuna name, the config key it sets, and its distribution."""

    name: str
    key: str
    type: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[tuple[Any, ...]] = None

    def suggest(self, trial: optuna.trial.BaseTrial) -> Any:
        """Sample this parameter in ``trial`` (``trial.params`` then holds it under ``name``)."""
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            step = int(self.step) if self.step else 1
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log, step=step)
        return trial.suggest_categorical(self.name, list(self.choices))


@dataclass(frozen=True)
class ParamSpace:
    """The validated parameters of a study, in declaration order."""

    params: tuple[Param, ...]

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """One trial's values as ``{config key: value}``.

        Example:
            >>> space = parse_space({"lam": {"key": "search.lam", "low": 1.0, "high": 9.0}})
            >>> space.suggest(optuna.trial.FixedTrial({"lam": 3.0}))
            {'search.lam': 3.0}
        """
        return {p.key: p.suggest(trial) for p in self.params}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-able form (stored with the study, so a resumed study can check it is the same)."""
        return {p.name: {f.name: getattr(p, f.name) for f in fields(p) if f.name != "name"} for p in self.params}


def _number(name: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpaceError(f"outer.params.{name}.{field} must be a finite number, got {value!r}")
    return float(value)


def _check_key(name: str, key: str, cfg: Optional[DictConfig]) -> None:
    if key.split(".")[0] in _RESERVED:
        raise SpaceError(f"outer.params.{name}.key={key!r}: a trial may not change {key.split('.')[0]}.* "
                         f"(reserved: {', '.join(_RESERVED)})")
    if cfg is None:
        return
    missing = object()
    node = OmegaConf.select(cfg, key, default=missing, throw_on_missing=False)
    if node is missing:
        raise SpaceError(f"outer.params.{name}.key={key!r} is not a key of the search config "
                         "(e.g. search.lam, search.arch.lr, budget.value)")
    if OmegaConf.is_config(node):
        raise SpaceError(f"outer.params.{name}.key={key!r} is a config group, not a value")


def parse_param(name: str, spec: Mapping[str, Any], cfg: Optional[DictConfig] = None) -> Param:
    """Validate one ``outer.params`` entry; ``cfg`` (the composed config) checks its key exists.

    Example:
        >>> parse_param("eps", {"key": "search.eps", "type": "float", "low": 0.02, "high": 0.1}).high
        0.1
    """
    if not isinstance(spec, Mapping):
        raise SpaceError(f"outer.params.{name} must be a mapping {{type, low, high, ...}}, got {spec!r}")
    allowed = [f.name for f in fields(ParamSpec)]
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise SpaceError(f"outer.params.{name}: unknown field(s) {unknown}; allowed: {allowed}")
    s = {f.name: spec.get(f.name, f.default) for f in fields(ParamSpec)}
    key = s["key"] or name
    _check_key(name, key, cfg)
    kind = s["type"]
    if kind not in PARAM_TYPES:
        raise SpaceError(f"outer.params.{name}.type={kind!r}; must be one of {PARAM_TYPES}")
    if kind == "categorical":
        extra = [f for f in ("low", "high", "step") if s[f] is not None] + (["log"] if s["log"] else [])
        if extra:
            raise SpaceError(f"outer.params.{name}: a categorical parameter takes `choices` only, not {extra}")
        choices = s["choices"]
        if not isinstance(choices, (list, tuple)) or not choices:
            raise SpaceError(f"outer.params.{name}: a categorical parameter needs a non-empty list `choices`")
        bad = [c for c in choices if not isinstance(c, _SCALARS)]
        if bad or len(set(map(repr, choices))) != len(choices):
            raise SpaceError(f"outer.params.{name}.choices must be distinct None/bool/int/float/str values, "
                             f"got {list(choices)}")
        return Param(name, key, kind, choices=tuple(choices))
    if s["choices"] is not None:
        raise SpaceError(f"outer.params.{name}: `choices` is for type: categorical only")
    if s["low"] is None or s["high"] is None:
        raise SpaceError(f"outer.params.{name}: a {kind} parameter needs `low` and `high`")
    low, high = _number(name, "low", s["low"]), _number(name, "high", s["high"])
    if not low < high:
        raise SpaceError(f"outer.params.{name}: low={low:g} must be < high={high:g}")
    if s["log"] and low <= 0:
        raise SpaceError(f"outer.params.{name}: log: true needs low > 0, got low={low:g}")
    step = None if s["step"] is None else _number(name, "step", s["step"])
    if step is not None and (step <= 0 or s["log"]):
        raise SpaceError(f"outer.params.{name}: step must be > 0 and cannot be combined with log: true")
    if kind == "int" and not all(v is None or float(v).is_integer() for v in (low, high, step)):
        raise SpaceError(f"outer.params.{name}: an int parameter needs integer low/high/step, got "
                         f"{low:g}, {high:g}, {step}")
    return Param(name, key, kind, low, high, bool(s["log"]), step)


def parse_space(params: Mapping[str, Any], cfg: Optional[DictConfig] = None) -> ParamSpace:
    """Validate ``outer.params`` (a dict or DictConfig); ``cfg`` is the composed search config.

    Example:
        >>> [p.key for p in parse_space({"t0": {"key": "search.t0", "low": 0.5, "high": 5}}).params]
        ['search.t0']
    """
    if OmegaConf.is_config(params):
        params = OmegaConf.to_container(params, resolve=True)
    if not params:
        raise SpaceError("outer.params is empty: a study needs at least one tuned parameter (conf/outer/optuna.yaml)")
    parsed = tuple(parse_param(str(name), spec, cfg) for name, spec in params.items())
    keys = [p.key for p in parsed]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise SpaceError(f"outer.params: several parameters set the same key(s) {dup}")
    return ParamSpace(parsed)


__all__ = ["PARAM_TYPES", "Param", "ParamSpace", "SpaceError", "parse_param", "parse_space"]
