"""Run bookkeeping shared by every entry point: git revision, config fingerprints, result tables.

Example::

    info = run_info(cfg)               # {"git_revision": "...", "config_hash": "..."}
    upsert_csv(Path("results/teachers.csv"), row, key=("task", "model"), columns=COLUMNS)
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[2]


def git_revision() -> str:
    """``<sha>`` of the checkout amqs runs from, ``<sha>-dirty`` with local changes, or ``unknown``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-able value or an OmegaConf node (resolved)."""
    if isinstance(obj, DictConfig):
        obj = OmegaConf.to_container(obj, resolve=True)
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_config(cfg: DictConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))


def write_json(path: Path, obj: Mapping[str, Any]) -> None:
    """Write atomically, so a killed run never leaves half a metrics file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def upsert_csv(path: Path, row: Mapping[str, Any], key: Sequence[str], columns: Sequence[str]) -> None:
    """Insert ``row`` into a results table, replacing the row with the same ``key`` values."""
    unknown = set(row) - set(columns)
    if unknown:
        raise ValueError(f"{path}: columns {sorted(unknown)} are not in {list(columns)}")
    rows: list[dict[str, Any]] = []
    if path.exists():
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f)]
    ident = tuple(str(row.get(k, "")) for k in key)
    rows = [r for r in rows if tuple(r.get(k, "") for k in key) != ident]
    rows.append({c: row.get(c, "") for c in columns})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)


def command_line(program: str, overrides: Iterable[str]) -> str:
    """The command that reproduces a Hydra run: program plus its command-line overrides."""
    return " ".join([program, *overrides])
