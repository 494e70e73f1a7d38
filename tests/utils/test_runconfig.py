from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import amqs.utils.runconfig as runconfig
from amqs.utils.runconfig import RunConfigError, load_run_config, read_run_config
from tests.conftest import REPO


def _committed_configs() -> list[str]:
    out = subprocess.run(["git", "ls-files", "results/**config.yaml"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out, "no committed run config found (git ls-files 'results/**config.yaml')"
    return out


def _expected_kind(path: str) -> str:
    parts = Path(path).parts
    if parts[1] == "teachers":
        return "finetune"
    if parts[1] == "studies" and len(parts) == 4:  # results/studies/<name>/config.yaml
        return "study"
    return "search" if "search:" in (REPO / path).read_text() else "qat"


@pytest.mark.parametrize("path", _committed_configs())
def test_every_committed_config_loads_with_todays_schema(path: str) -> None:
    try:
        saved = read_run_config(REPO / path)
    except Exception as e:  # noqa: BLE001 - the failure must name the file
        pytest.fail(f"{path} does not load with today's schema: {e}")
    assert saved.kind == _expected_kind(path)
    raw = OmegaConf.load(REPO / path)
    absent = object()
    changed = [k for k in _leaves(raw) if OmegaConf.select(saved.cfg, k) != OmegaConf.select(raw, k)]
    assert not changed, f"{path}: the loader changed saved values {changed}"
    assert all(OmegaConf.select(raw, k, default=absent) is absent for k in saved.filled)


def _leaves(node, prefix: str = "") -> list[str]:
    """Dotted keys of every saved value (a null section counts as one value)."""
    out = []
    for k in node.keys():
        child = node._get_node(k)
        section = OmegaConf.is_dict(child) and not child._is_none()
        out += _leaves(child, f"{prefix}{k}.") if section else [f"{prefix}{k}"]
    return out

def test_an_old_config_is_filled_from_defaults_in_one_log_line(tmp_path: Path, caplog) -> None:
    old = OmegaConf.load(REPO / "results/runs/mrpc-q8bert/config.yaml")
    for key in ("assignment", "staged"):
        old.pop(key, None)
    del old.quant["tws"]
    OmegaConf.save(old, tmp_path / "config.yaml")
    with caplog.at_level(logging.INFO, logger="amqs.utils.runconfig"):
        saved = read_run_config(tmp_path)
    assert set(saved.filled) >= {"assignment", "staged", "quant.tws"} and saved.kind == "qat"
    assert saved.cfg.quant.tws is False and saved.cfg.staged is None and saved.cfg.quant.weight_bits == 8
    lines = [r.getMessage() for r in caplog.records if r.name == "amqs.utils.runconfig"]
    assert len(lines) == 1 and "quant.tws" in lines[0] and "assignment" in lines[0]


def test_renamed_removed_and_unknown_keys_fail_with_one_line(tmp_path: Path, monkeypatch) -> None:
    cfg = OmegaConf.load(REPO / "results/teachers/minilm-l6-sst2/config.yaml")
    cfg.train.old_lr = 1.0
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    with pytest.raises(RunConfigError, match=r"config.yaml: key 'train.old_lr' does not fit today's FinetuneConfig"):
        load_run_config(tmp_path)
    monkeypatch.setitem(runconfig.RENAMED, "train.old_lr", "train.lr")
    with pytest.raises(RunConfigError, match="'train.old_lr' was renamed to 'train.lr'"):
        load_run_config(tmp_path)
    monkeypatch.delitem(runconfig.RENAMED, "train.old_lr")
    monkeypatch.setitem(runconfig.REMOVED, "train.old_lr", "the schedule sets it")
    with pytest.raises(RunConfigError, match="'train.old_lr' was removed: the schedule sets it") as e:
        load_run_config(tmp_path)
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_run_config(tmp_path / "nothing")


def test_no_other_reader_loads_a_run_config_with_omegaconf_alone() -> None:
    """Every saved config is read through amqs.utils.runconfig, so old runs keep loading."""
    pattern = re.compile(r"OmegaConf\.load\(")
    this = Path(__file__).resolve()
    files = [p for folder in ("amqs", "bench", "tests") for p in (REPO / folder).rglob("*.py")]
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in files
                 if p.resolve() not in (this, Path(runconfig.__file__).resolve())
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, f"read saved configs with amqs.utils.runconfig.load_run_config: {offenders}"
