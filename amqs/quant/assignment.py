"""The single bit-assignment format shared by search, training, export and sizing.

A :class:`BitAssignment` maps qualified module names (as in
``model.named_modules()``) to :class:`ModuleBits` (per-subgroup bit-widths plus
the matrix shape, so sizes can be computed without the model). It is immutable
and round-trips exactly through JSON (:meth:`BitAssignment.to_json` /
:meth:`BitAssignment.from_json`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

from torch import nn

from amqs.quant.functions import ALLOWED_BITS, SCHEMES
from amqs.quant.targets import DEFAULT_EMBEDDING_PATTERNS, DEFAULT_LINEAR_PATTERNS, select_modules

FORMAT_VERSION = 1
KINDS = ("linear", "embedding")
_MODULE_KEYS = ("num_subgroups", "bits", "out_features", "in_features", "kind")
_TOP_KEYS = ("version", "scheme", "act_bits", "modules", "meta")
_INT_LIST = re.compile(r"\[\n\s*-?\d+(?:,\n\s*-?\d+)*\n\s*\]")


@dataclass(frozen=True)
class ModuleBits:
    """Bit-widths of one matrix, one per row subgroup.

    ``out_features``/``in_features`` are the weight's ``[rows, cols]``; for an
    embedding that is ``[num_embeddings, embedding_dim]``.

    Example:
        >>> mb = ModuleBits(2, (8, 4), out_features=4, in_features=3, kind="linear")
        >>> mb.weight_bits  # 2 rows * 3 cols * (8 + 4)
        72
    """

    num_subgroups: int
    bits: tuple[int, ...]
    out_features: int
    in_features: int
    kind: str = "linear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", tuple(self.bits))
        for name in ("num_subgroups", "out_features", "in_features"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if len(self.bits) != self.num_subgroups:
            raise ValueError(f"got {len(self.bits)} bit-widths for num_subgroups={self.num_subgroups}")
        bad = sorted({b for b in self.bits if isinstance(b, bool) or not isinstance(b, int) or b not in ALLOWED_BITS})
        if bad:
            raise ValueError(f"invalid bit-width(s) {bad}; allowed values are {ALLOWED_BITS}")
        if self.out_features % self.num_subgroups:
            raise ValueError(
                f"{self.out_features} rows cannot be split into {self.num_subgroups} equal subgroups"
            )

    @property
    def rows_per_subgroup(self) -> int:
        return self.out_features // self.num_subgroups

    @property
    def num_weights(self) -> int:
        return self.out_features * self.in_features

    @property
    def weight_bits(self) -> int:
        """Bits of the weight codes alone (no qparams): ``sum_g rows_g * in * bits_g``."""
        return self.rows_per_subgroup * self.in_features * sum(self.bits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_subgroups": self.num_subgroups,
            "bits": list(self.bits),
            "out_features": self.out_features,
            "in_features": self.in_features,
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModuleBits":
        _check_keys(d, _MODULE_KEYS, "module entry")
        bits = d["bits"]
        if not isinstance(bits, (list, tuple)):
            raise ValueError(f"'bits' must be a list of ints, got {type(bits).__name__}")
        return cls(**{k: d[k] for k in _MODULE_KEYS})


def _check_keys(d: Any, expected: Sequence[str], what: str) -> None:
    if not isinstance(d, Mapping):
        raise ValueError(f"{what} must be a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - set(expected))
    missing = [k for k in expected if k not in d]
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}; expected {list(expected)}")
    if missing:
        raise ValueError(f"{what}: missing key(s) {missing}")


def _is_act_bits(b: Any) -> bool:
    return isinstance(b, int) and not isinstance(b, bool) and (2 <= b <= 16 or b == 32)


def _freeze_json(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    # A JSON round-trip at construction both validates serializability and
    # normalises tuples to lists, which is what makes to_json/from_json exact.
    try:
        return MappingProxyType(json.loads(json.dumps(dict(meta))))
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta must be JSON-serializable: {e}") from None


@dataclass(frozen=True, kw_only=True)
class BitAssignment:
    """Per-module, per-subgroup bit-widths plus global quantization settings.

    Example:
        >>> a = BitAssignment(modules={"fc": ModuleBits(1, (8,), 4, 4)}, scheme="minmax", act_bits=8)
        >>> BitAssignment.from_dict(a.to_dict()) == a
        True
    """

    modules: Mapping[str, ModuleBits]
    scheme: str = "minmax"
    act_bits: int | None = 8
    meta: Mapping[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.version != FORMAT_VERSION:
            raise ValueError(f"unsupported BitAssignment version {self.version!r}; this code reads {FORMAT_VERSION}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {self.scheme!r}; expected one of {SCHEMES}")
        if self.act_bits is not None and not _is_act_bits(self.act_bits):
            raise ValueError(f"act_bits must be None, an int in 2..16, or 32; got {self.act_bits!r}")
        for name, mb in self.modules.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"module names must be non-empty strings, got {name!r}")
            if not isinstance(mb, ModuleBits):
                raise ValueError(f"modules[{name!r}] must be a ModuleBits, got {type(mb).__name__}")
        object.__setattr__(self, "modules", MappingProxyType(dict(self.modules)))
        object.__setattr__(self, "meta", _freeze_json(self.meta))

    def __hash__(self) -> int:  # the read-only mappings are unhashable; hash the canonical form
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __reduce__(self) -> tuple[Any, ...]:  # mappingproxy cannot be pickled (multiprocessing)
        return (BitAssignment.from_dict, (self.to_dict(),))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "scheme": self.scheme,
            "act_bits": self.act_bits,
            "modules": {name: mb.to_dict() for name, mb in self.modules.items()},
            "meta": json.loads(json.dumps(dict(self.meta))),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BitAssignment":
        if isinstance(d, Mapping) and "version" in d and d["version"] != FORMAT_VERSION:
            raise ValueError(f"unsupported BitAssignment version {d['version']!r}; this code reads {FORMAT_VERSION}")
        _check_keys(d, _TOP_KEYS, "BitAssignment")
        if not isinstance(d["modules"], Mapping):
            raise ValueError("'modules' must be a mapping of module name -> entry")
        modules = {}
        for name, entry in d["modules"].items():
            try:
                modules[name] = ModuleBits.from_dict(entry)
            except (ValueError, TypeError) as e:
                raise ValueError(f"module {name!r}: {e}") from None
        return cls(modules=modules, scheme=d["scheme"], act_bits=d["act_bits"], meta=d["meta"], version=d["version"])

    def to_json(self, path: str | Path) -> None:
        """Write as JSON (integer lists kept on one line so files stay readable).

        Atomic (a temporary file, then ``os.replace``): a killed run leaves the old file or the new one.
        """
        text = json.dumps(self.to_dict(), indent=2)
        # Only lists json.dumps spread over lines match (strings never hold raw
        # newlines), so string contents in `meta` are never touched.
        text = _INT_LIST.sub(lambda m: json.dumps(json.loads(m.group(0))), text)
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, path: str | Path) -> "BitAssignment":
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON: {e}") from None
        return cls.from_dict(data)

    def with_bits(self, updates: Mapping[str, Iterable[int]], **meta_updates: Any) -> "BitAssignment":
        """Copy with new bit-widths for some modules (same subgroup counts).

        Example:
            >>> a = BitAssignment(modules={"fc": ModuleBits(2, (8, 8), 4, 4)})
            >>> a.with_bits({"fc": [4, 0]}).modules["fc"].bits
            (4, 0)
        """
        modules = dict(self.modules)
        for name, bits in updates.items():
            if name not in modules:
                raise KeyError(f"module {name!r} is not in this assignment")
            modules[name] = replace(modules[name], bits=tuple(int(b) for b in bits))
        return replace(self, modules=modules, meta={**self.meta, **meta_updates})


def shuffle_bits(assignment: BitAssignment, seed: int, kinds: Sequence[str] = ("linear",),
                 tie_key: Callable[[str], str] | None = None) -> BitAssignment:
    """A random control of ``assignment``: each module's bit-widths permuted among its own subgroups.

    Every module keeps the same multiset of bit-widths, so sizes (per module and in total) are exactly
    those of ``assignment``; only *which* subgroups get which bits is random. Modules of other ``kinds``
    (embeddings by default) are kept. Modules with the same ``tie_key(name)`` (a structured space's Q/K/V
    of one layer, :meth:`amqs.search.space.SearchSpace.tie_key`) share one permutation, so a pruned head
    stays pruned in all three and stays removable.

    Example:
        >>> a = BitAssignment(modules={"fc": ModuleBits(4, (0, 2, 4, 8), 8, 3)})
        >>> sorted(shuffle_bits(a, seed=0).modules["fc"].bits)
        [0, 2, 4, 8]
    """
    import random

    rng = random.Random(seed)
    perms: dict[str, list[int]] = {}
    updates = {}
    for name in sorted(assignment.modules):
        mb = assignment.modules[name]
        if mb.kind not in kinds:
            continue
        key = tie_key(name) if tie_key else name
        perm = perms.get(key)
        if perm is None:
            perm = perms[key] = rng.sample(range(mb.num_subgroups), mb.num_subgroups)
        elif len(perm) != mb.num_subgroups:
            raise ValueError(f"{name}: tied to a module with {len(perm)} subgroups, has {mb.num_subgroups}")
        updates[name] = [mb.bits[i] for i in perm]
    return assignment.with_bits(updates, shuffled_from_seed=seed)


def _subgroups_for(
    name: str, rows: int, num_subgroups: int | Mapping[str, int] | None, subgroup_size: int | None
) -> int:
    if subgroup_size is not None:
        if num_subgroups is not None:
            raise ValueError("pass either num_subgroups or subgroup_size, not both")
        if subgroup_size <= 0 or rows % subgroup_size:
            raise ValueError(f"{name}: {rows} rows are not a multiple of subgroup_size={subgroup_size}")
        return rows // subgroup_size
    if num_subgroups is None:
        return 1
    if isinstance(num_subgroups, int):
        return num_subgroups
    for pattern, g in num_subgroups.items():
        if re.fullmatch(pattern, name):
            return g
    raise ValueError(f"{name}: no key of the num_subgroups mapping matches this module")


def _uniform_entries(model: nn.Module, patterns: Sequence[str], module_type: type[nn.Linear] | type[nn.Embedding],
                     bits: int, subgroups_of: Callable[[str, int], int]) -> dict[str, ModuleBits]:
    """``bits`` for every subgroup of the ``module_type`` modules matching ``patterns``, in model order."""
    kind = "linear" if module_type is nn.Linear else "embedding"
    out: dict[str, ModuleBits] = {}
    for name in select_modules(model, patterns, module_type):
        w = model.get_submodule(name).weight
        g = subgroups_of(name, w.shape[0])
        try:
            out[name] = ModuleBits(g, (bits,) * g, w.shape[0], w.shape[1], kind)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    return out


def uniform_assignment(
    model: nn.Module,
    patterns: Sequence[str] = DEFAULT_LINEAR_PATTERNS,
    bits: int = 8,
    num_subgroups: int | Mapping[str, int] | None = None,
    scheme: str = "minmax",
    act_bits: int | None = 8,
    embedding_patterns: Sequence[str] = DEFAULT_EMBEDDING_PATTERNS,
    embedding_bits: int = 8,
    *,
    subgroup_size: int | None = None,
    embedding_num_subgroups: int | Mapping[str, int] = 1,
    meta: Mapping[str, Any] | None = None,
) -> BitAssignment:
    """Same ``bits`` for every subgroup of the ``nn.Linear`` modules matching ``patterns``.

    Subgroups per linear matrix: ``num_subgroups`` as an int (all matrices), a
    mapping ``regex -> int`` (first key that fullmatches the module name wins),
    or ``subgroup_size`` = rows per subgroup (``G = out_features / subgroup_size``);
    default 1 (per-matrix). Embeddings matching ``embedding_patterns`` (pass
    ``()`` for none) get ``embedding_bits`` with ``embedding_num_subgroups`` (an int,
    or a mapping ``regex -> int`` like ``num_subgroups``).
    Patterns are ``re.fullmatch``-ed against ``model.named_modules()`` names and
    each must match at least one module.

    Example:
        >>> from transformers import BertConfig, BertForSequenceClassification
        >>> m = BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=64, vocab_size=50))
        >>> len(uniform_assignment(m, bits=4, num_subgroups=4).modules)
        9
    """
    modules = _uniform_entries(model, patterns, nn.Linear, bits,
                               lambda name, rows: _subgroups_for(name, rows, num_subgroups, subgroup_size))
    if embedding_patterns:
        modules.update(_uniform_entries(model, embedding_patterns, nn.Embedding, embedding_bits,
                                        lambda name, rows: _subgroups_for(name, rows, embedding_num_subgroups, None)))
    return BitAssignment(modules=modules, scheme=scheme, act_bits=act_bits, meta=dict(meta or {}))
