"""Search spaces as data: which Linears (and embedding tables) are searched, how they split, which bit choices
they get.

A space is a YAML file in ``search_spaces/`` (see ``default.yaml`` for every key, commented),
validated on load against the dataclasses below; every error names the file and the key. Bit
choices are looked up by value (or name) in the :data:`CHOICES` registry -- nothing is ``eval``-ed.
Applying a space to a model (:meth:`SearchSpace.plan`) resolves the regexes against
``model.named_modules()`` and the subgroup specs against each weight's rows:

* ``{count: N}`` -- *at most* N subgroups: ``G = min(N, rows)`` (so a 128-subgroup space also
  applies to a 64-row test model); ``G`` must divide ``rows``.
* ``{size: N}`` -- N rows per subgroup (``G = rows / N``).
* ``{per_head: true}`` -- one subgroup per attention head (``head_dim`` rows each).

A group may match ``nn.Embedding`` tables too (``search_spaces/embeddings.yaml``: the word embeddings per
block of token rows); the other tables matching ``embeddings`` stay fixed at ``embedding_bits``. Sizes are
accounted under ``encoder_prefix`` unless the budget is a whole-model one (``budget.kind=total_bytes`` /
``total_compression``), which a space searching outside the encoder needs.

``tie`` (optional) is a regex with one capture group, searched in each module name; modules whose
names are equal once that group's text is replaced by ``*`` share one logits tensor (e.g.
``attention\\.self\\.(query|key|value)$`` ties Q, K and V of a layer, subgroup by subgroup).

Patterns are written in BERT's module names and match every family of :mod:`amqs.models.family`: a module's
name *and* its BERT spelling are tried (``distilbert.transformer.layer.0.attention.q_lin`` is
``bert.encoder.layer.0.attention.self.query``), as is ``encoder_prefix``; a tie regex that does not occur in a
module's own name is searched in its BERT spelling (the tie key is then BERT-spelled).

Example::

    space = load_space("structured")            # or a path to any YAML file
    plan = space.plan(model)                    # [SearchedModule(name, num_subgroups, choices, tie_key, ...)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml
from torch import nn

from amqs.models.family import canonical_name, name_matches
from amqs.quant.functions import SCHEMES
from amqs.quant.targets import BERT_EMBEDDING_PATTERN

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
SPACE_VERSION = 1


@dataclass(frozen=True)
class Choice:
    """One candidate operation of a subgroup: a weight bit-width."""

    bits: int
    name: str
    description: str


# The registry of candidate choices (value -> Choice); the values are amqs.quant's ALLOWED_BITS.
CHOICES: dict[int, Choice] = {
    c.bits: c
    for c in (
        Choice(0, "prune", "subgroup removed: exact zeros, nothing stored"),
        Choice(1, "binary", "sign(w) * mean|w|"),
        Choice(2, "int2", "2-bit integer grid of the scheme"),
        Choice(4, "int4", "4-bit integer grid of the scheme"),
        Choice(8, "int8", "8-bit integer grid of the scheme"),
        Choice(32, "fp32", "not quantized"),
    )
}
_BY_NAME = {c.name: c for c in CHOICES.values()}


def lookup_choice(value: Any, where: str = "choice") -> Choice:
    """The registered :class:`Choice` for a bit value (``4``) or a name (``"int4"``).

    Example:
        >>> lookup_choice(4).name, lookup_choice("prune").bits
        ('int4', 0)
    """
    found = None
    if isinstance(value, int) and not isinstance(value, bool):
        found = CHOICES.get(value)
    elif isinstance(value, str):
        found = _BY_NAME.get(value)
    if found is None:
        allowed = ", ".join(f"{c.bits} ({c.name})" for c in CHOICES.values())
        raise ValueError(f"{where}: bad choice {value!r}; allowed: {allowed}")
    return found


class SpaceError(ValueError):
    """A search space is malformed or does not fit the model (message names file and key)."""


@dataclass(frozen=True)
class SubgroupSpec:
    """How a matrix's rows split into subgroups: exactly one of ``count``/``size``/``per_head``."""

    count: int | None = None
    size: int | None = None
    per_head: bool = False

    def describe(self) -> str:
        if self.count is not None:
            return f"count: {self.count} (min(count, rows) subgroups)"
        return f"size: {self.size} rows" if self.size is not None else "per_head"

    def num_subgroups(self, rows: int, head_dim: int | None) -> int:
        """``G`` for a matrix of ``rows`` rows (``head_dim`` only for ``per_head``)."""
        if self.count is not None:
            g = min(self.count, rows)
        elif self.size is not None:
            g = rows // self.size if rows % self.size == 0 else 0
        else:
            if head_dim is None:
                raise ValueError("per_head needs model.config.hidden_size and num_attention_heads")
            g = rows // head_dim if rows % head_dim == 0 else 0
        if g <= 0 or rows % g:
            raise ValueError(f"{self.describe()} does not split {rows} rows into equal subgroups")
        return g


@dataclass(frozen=True)
class GroupSpec:
    """A set of modules (first group whose pattern fullmatches a module wins)."""

    name: str
    modules: tuple[str, ...]
    subgroups: SubgroupSpec
    choices: tuple[int, ...] | None = None  # None: the space's default choices
    tie: str | None = None


@dataclass(frozen=True)
class SearchedModule:
    """One searched matrix, as resolved against a model by :meth:`SearchSpace.plan`."""

    name: str
    group: str
    out_features: int
    in_features: int
    num_subgroups: int
    choices: tuple[int, ...]
    tie_key: str  # modules with the same tie_key share one logits tensor


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space (see the module docstring and ``search_spaces/default.yaml``)."""

    name: str
    choices: tuple[int, ...]
    groups: tuple[GroupSpec, ...]
    scheme: str = "minmax"
    act_bits: int | None = 8
    embedding_bits: int | None = 8
    embeddings: str = BERT_EMBEDDING_PATTERN
    encoder_prefix: str = "bert.encoder."
    version: int = SPACE_VERSION
    source: str = "<dict>"  # file it came from, for error messages

    def tie_key(self, name: str) -> str:
        """The tie key of a module name, without a model: modules with equal keys share their logits.

        Example:
            >>> st = load_space("structured")
            >>> st.tie_key("bert.encoder.layer.2.attention.self.key")
            'bert.encoder.layer.2.attention.self.*'
            >>> st.tie_key("bert.encoder.layer.2.output.dense")
            'bert.encoder.layer.2.output.dense'
        """
        i = self.group_index(name)
        if i is None:
            return name
        g = self.groups[i]
        return _tie_key(name, g.tie, f"{self.source}: groups[{i}] ({g.name})")

    def group_index(self, name: str) -> int | None:
        """Index of the first group with a pattern that fullmatches ``name`` (None: not searched)."""
        return next((i for i, g in enumerate(self.groups) if any(name_matches(p, name) for p in g.modules)), None)

    def plan(self, model: nn.Module) -> list[SearchedModule]:
        """Resolve the groups against ``model``'s ``nn.Linear`` and ``nn.Embedding`` modules (model order).

        Raises :class:`SpaceError` for a pattern matching nothing, a non-dividing subgroup
        spec, a tie regex that misses a module, or tied modules of different shapes. (A module outside
        ``encoder_prefix`` needs a whole-model budget: :func:`amqs.search.objective.size_base` says so.)

        Example:
            >>> plan = load_space("aqbert").plan(model)  # doctest: +SKIP
        """
        linears = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))]
        head_dim = _head_dim(model)
        for i, g in enumerate(self.groups):
            for p in g.modules:
                if not any(name_matches(p, n) for n, _ in linears):
                    raise SpaceError(f"{self.source}: groups[{i}] ({g.name}).modules: pattern r'{p}' "
                                     f"matches no nn.Linear or nn.Embedding of {type(model).__name__}")
        plan: list[SearchedModule] = []
        claimed = [0] * len(self.groups)
        for name, module in linears:
            i = self.group_index(name)
            if i is None:
                continue
            g, where = self.groups[i], f"{self.source}: groups[{i}] ({self.groups[i].name})"
            claimed[i] += 1
            rows, cols = module.weight.shape
            try:
                num = g.subgroups.num_subgroups(rows, head_dim)
            except ValueError as e:
                raise SpaceError(f"{where}.subgroups: {name}: {e}") from None
            plan.append(SearchedModule(name, g.name, rows, cols, num, g.choices or self.choices,
                                       _tie_key(name, g.tie, where)))
        for i, n in enumerate(claimed):
            if n == 0:
                raise SpaceError(f"{self.source}: groups[{i}] ({self.groups[i].name}).modules: every module it "
                                 "matches is already claimed by an earlier group")
        _check_ties(plan, self.source)
        return plan


def _head_dim(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    hidden, heads = getattr(cfg, "hidden_size", None), getattr(cfg, "num_attention_heads", None)
    return hidden // heads if hidden and heads else None


def _tie_key(name: str, tie: str | None, where: str) -> str:
    if tie is None:
        return name
    m = re.search(tie, name)
    if m is None:
        name = canonical_name(name)
        m = re.search(tie, name)
    if m is None:
        raise SpaceError(f"{where}.tie: r'{tie}' does not occur in module name {name}")
    return name[: m.start(1)] + "*" + name[m.end(1) :]


def _check_ties(plan: list[SearchedModule], source: str) -> None:
    first: dict[str, SearchedModule] = {}
    for sm in plan:
        ref = first.setdefault(sm.tie_key, sm)
        if (ref.out_features, ref.in_features, ref.num_subgroups, ref.choices) != (
            sm.out_features, sm.in_features, sm.num_subgroups, sm.choices
        ):
            raise SpaceError(
                f"{source}: group {sm.group!r}.tie: {ref.name} and {sm.name} share tie key {sm.tie_key!r} but "
                f"differ in shape/subgroups/choices ({ref.out_features}x{ref.in_features}, G={ref.num_subgroups} "
                f"vs {sm.out_features}x{sm.in_features}, G={sm.num_subgroups})"
            )


# ---------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------
_TOP_KEYS = ("version", "name", "scheme", "act_bits", "embedding_bits", "embeddings", "encoder_prefix",
             "choices", "groups")
_GROUP_KEYS = ("name", "modules", "subgroups", "choices", "tie")
_SUBGROUP_KEYS = ("count", "size", "per_head")


def _keys(d: Any, allowed: tuple[str, ...], required: tuple[str, ...], where: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise SpaceError(f"{where}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {unknown}; allowed: {list(allowed)}")
    missing = [k for k in required if k not in d]
    if missing:
        raise SpaceError(f"{where}: missing key(s) {missing}")
    return d


def _pos_int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise SpaceError(f"{where}: expected a positive int, got {v!r}")
    return v


def _choices(v: Any, where: str) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)) or not v:
        raise SpaceError(f"{where}: expected a non-empty list of bit choices, got {v!r}")
    try:
        bits = [lookup_choice(c, where).bits for c in v]
    except ValueError as e:
        raise SpaceError(str(e)) from None
    if len(set(bits)) != len(bits):
        raise SpaceError(f"{where}: duplicate choices in {v!r}")
    return tuple(sorted(bits))  # ascending: derive.py's repair steps move along this order


def _regex(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise SpaceError(f"{where}: expected a regex string, got {v!r}")
    try:
        re.compile(v)
    except re.error as e:
        raise SpaceError(f"{where}: invalid regex r'{v}': {e}") from None
    return v


def _subgroups(d: Any, where: str) -> SubgroupSpec:
    d = _keys(d, _SUBGROUP_KEYS, (), where)
    given = [k for k in _SUBGROUP_KEYS if d.get(k) not in (None, False)]
    if len(given) != 1:
        raise SpaceError(f"{where}: give exactly one of count / size / per_head, got {given or 'none'}")
    if "per_head" in given and d["per_head"] is not True:
        raise SpaceError(f"{where}.per_head: expected true, got {d['per_head']!r}")
    k = given[0]
    return SubgroupSpec(**{k: True if k == "per_head" else _pos_int(d[k], f"{where}.{k}")})


def _group(d: Any, i: int, where: str) -> GroupSpec:
    where = f"{where}: groups[{i}]"
    d = _keys(d, _GROUP_KEYS, ("name", "modules", "subgroups"), where)
    mods = d["modules"] if isinstance(d["modules"], list) else [d["modules"]]
    tie = d.get("tie")
    if tie is not None:
        tie = _regex(tie, f"{where}.tie")
        if re.compile(tie).groups != 1:
            raise SpaceError(f"{where}.tie: r'{tie}' must have exactly one capture group (the part that differs)")
    return GroupSpec(
        name=str(d["name"]),
        modules=tuple(_regex(p, f"{where}.modules") for p in mods),
        subgroups=_subgroups(d["subgroups"], f"{where}.subgroups"),
        choices=None if d.get("choices") is None else _choices(d["choices"], f"{where}.choices"),
        tie=tie,
    )


def space_from_dict(d: Mapping[str, Any], source: str = "<dict>") -> SearchSpace:
    """Validate a parsed YAML mapping into a :class:`SearchSpace` (``source`` names it in errors).

    Example:
        >>> s = space_from_dict({"version": 1, "name": "x", "choices": [0, 4],
        ...     "groups": [{"name": "all", "modules": "bert\\\\.encoder\\\\..*", "subgroups": {"count": 8}}]})
        >>> s.choices, s.groups[0].subgroups.count
        ((0, 4), 8)
    """
    d = _keys(d, _TOP_KEYS, ("version", "name", "choices", "groups"), source)
    if d["version"] != SPACE_VERSION:
        raise SpaceError(f"{source}: version: unsupported search-space version {d['version']!r}; "
                         f"this code reads {SPACE_VERSION}")
    scheme = d.get("scheme", "minmax")
    if scheme not in SCHEMES:
        raise SpaceError(f"{source}: scheme: unknown {scheme!r}; expected one of {SCHEMES}")
    act_bits = d.get("act_bits", 8)
    if act_bits is not None and (isinstance(act_bits, bool) or not isinstance(act_bits, int)
                                 or not (2 <= act_bits <= 16 or act_bits == 32)):
        raise SpaceError(f"{source}: act_bits: expected null, 2..16 or 32, got {act_bits!r}")
    emb_bits = d.get("embedding_bits", 8)
    if emb_bits is not None:
        try:
            emb_bits = lookup_choice(emb_bits, f"{source}: embedding_bits").bits
        except ValueError as e:
            raise SpaceError(str(e)) from None
    groups = d["groups"]
    if not isinstance(groups, list) or not groups:
        raise SpaceError(f"{source}: groups: expected a non-empty list")
    parsed = tuple(_group(g, i, source) for i, g in enumerate(groups))
    names = [g.name for g in parsed]
    if len(set(names)) != len(names):
        raise SpaceError(f"{source}: groups: duplicate group names {names}")
    prefix = d.get("encoder_prefix", "bert.encoder.")
    if not isinstance(prefix, str):
        raise SpaceError(f"{source}: encoder_prefix: expected a string, got {prefix!r}")
    return SearchSpace(
        name=str(d["name"]), choices=_choices(d["choices"], f"{source}: choices"), groups=parsed, scheme=scheme,
        act_bits=act_bits, embedding_bits=emb_bits,
        embeddings=_regex(d.get("embeddings", BERT_EMBEDDING_PATTERN), f"{source}: embeddings"),
        encoder_prefix=prefix, version=SPACE_VERSION, source=source,
    )


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load ``search_spaces/<name>.yaml`` (or any YAML path) and validate it.

    Example:
        >>> load_space("aqbert").choices
        (0, 2, 4)
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = SPACES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no search space {str(name_or_path)!r} ({path}); known: {known}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpaceError(f"{path}: not valid YAML: {e}") from None
    return space_from_dict(data, source=str(path))


def list_spaces() -> list[str]:
    """Names of the spaces shipped in ``search_spaces/``.

    Example:
        >>> "aqbert" in list_spaces()
        True
    """
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


__all__ = ["CHOICES", "Choice", "GroupSpec", "SearchSpace", "SearchedModule", "SpaceError", "SubgroupSpec",
           "list_spaces", "load_space", "lookup_choice", "space_from_dict"]
