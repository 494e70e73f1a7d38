"""The one way to read a saved run's ``config.yaml``: merged onto today's structured schema.

A run folder keeps its resolved config (``save_config``). The schema grows (``quant.tws``,
``init_from``, ``assignment`` ... were added after runs were recorded), so a saved config read with
``OmegaConf.load`` alone lacks keys today's code reads. :func:`load_run_config` detects which root
schema the file is (:func:`run_kind`), merges it onto that schema's defaults, logs one line with the
keys it filled, and refuses keys the schema no longer has: a renamed key names its new name
(:data:`RENAMED`), a removed one says why it went (:data:`REMOVED`), any other unknown key names the
file and the key.

Example::

    cfg = load_run_config("results/runs/sst2-default-compression13.0")   # a SearchConfig, today's keys
    saved = read_run_config("results/teachers/minilm-l6-sst2")           # .cfg, .kind, .filled, .path
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from amqs.config import FinetuneConfig, QatConfig, SearchConfig

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"

# Dotted keys saved runs may hold that today's schema spells differently: old key -> new key.
RENAMED: dict[str, str] = {}
# Dotted keys saved runs may hold that today's schema dropped: key -> why it went.
REMOVED: dict[str, str] = {}

# study: an amqs-search config with ``outer`` set; its trials and their retrains are search configs.
SCHEMAS: dict[str, type] = {"finetune": FinetuneConfig, "qat": QatConfig, "search": SearchConfig,
                            "study": SearchConfig}


class RunConfigError(ValueError):
    """A saved config that today's schema cannot read; the message names the file and the key."""


@dataclass(frozen=True)
class SavedConfig:
    """A saved run config merged onto today's schema."""

    cfg: DictConfig
    kind: str  # finetune | qat | search | study (the keys of SCHEMAS)
    filled: tuple[str, ...]  # dotted keys the file lacked, filled from today's defaults
    path: Path  # the config.yaml read


def run_kind(saved: DictConfig) -> str:
    """Which root schema a saved config is: ``study``, ``search``, ``qat`` or ``finetune``.

    Example:
        >>> run_kind(OmegaConf.create({"quant": {}, "search": {}, "outer": None}))
        'search'
    """
    if saved.get("outer") is not None:
        return "study"
    if "search" in saved:
        return "search"
    if "quant" in saved:
        return "qat"
    return "finetune"


def config_path(folder: str | Path) -> Path:
    """``folder/config.yaml`` (a path to the YAML file itself is returned as is)."""
    folder = Path(folder)
    return folder if folder.suffix in (".yaml", ".yml") else folder / CONFIG_FILE


def read_run_config(folder: str | Path) -> SavedConfig:
    """Load ``folder/config.yaml`` with today's schema; see the module docstring."""
    path = config_path(folder)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a run folder keeps its config.yaml)")
    saved = OmegaConf.load(path)
    if not isinstance(saved, DictConfig):
        raise RunConfigError(f"{path}: not a mapping of config keys")
    for key in _keys(saved):
        if key in RENAMED:
            raise RunConfigError(f"{path}: key {key!r} was renamed to {RENAMED[key]!r}")
        if key in REMOVED:
            raise RunConfigError(f"{path}: key {key!r} was removed: {REMOVED[key]}")
    kind = run_kind(saved)
    schema = SCHEMAS[kind]
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), saved)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        reason = str(e).splitlines()[0]
        raise RunConfigError(f"{path}: key {key!r} does not fit today's {schema.__name__} ({reason}); if it "
                             "was renamed or removed, say so in amqs.utils.runconfig.RENAMED / REMOVED") from None
    filled = tuple(_filled(cfg, saved))
    if filled:
        log.info("%s (%s): filled from today's defaults: %s", path, schema.__name__, ", ".join(filled))
    return SavedConfig(cfg=cfg, kind=kind, filled=filled, path=path)


def load_run_config(folder: str | Path) -> DictConfig:
    """A saved run's config (``folder/config.yaml``) merged onto today's schema.

    Example::

        cfg = load_run_config("results/runs/sst2-w8a8")
        cfg.quant.tws          # False: filled from today's default, logged once
    """
    return read_run_config(folder).cfg


def _keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a (plain, loaded) config, parents before children."""
    if isinstance(node, DictConfig) and not node._is_none():
        for k in node.keys():
            yield f"{prefix}{k}"
            yield from _keys(node._get_node(k), f"{prefix}{k}.")


def _filled(merged: Any, saved: Any, prefix: str = "") -> Iterator[str]:
    """Dotted keys of ``merged`` that ``saved`` lacks (the topmost missing key of each subtree)."""
    for k in merged.keys():
        if k not in saved:
            yield f"{prefix}{k}"
            continue
        m, s = merged._get_node(k), saved._get_node(k)
        if isinstance(m, DictConfig) and isinstance(s, DictConfig) and not m._is_none() and not s._is_none():
            yield from _filled(m, s, f"{prefix}{k}.")
