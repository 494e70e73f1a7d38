"""Shared fixtures: the shared GLUE folder, composed Hydra configs, tiny random BERTs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from amqs.config import CONF_DIR, register_configs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def single_thread() -> Iterator[None]:
    """One intra-op thread: the test models are tiny, and on a loaded 2-core machine thread
    hand-offs make tiny ops orders of magnitude slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _glue_dir() -> Path | None:
    env = os.environ.get("AMQS_GLUE_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data" / "glue"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """../shared/data/glue (or $AMQS_GLUE_DIR). Required in CI; skipped elsewhere when absent."""
    path = _glue_dir()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("the shared GLUE folder is missing: set AMQS_GLUE_DIR")
        pytest.skip("no GLUE folder (set AMQS_GLUE_DIR)")
    return path


def compose_cfg(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose a real config of conf/ the way its Hydra app does."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=overrides)


@pytest.fixture
def smoke_cfg(tmp_path: Path, glue_dir: Path) -> DictConfig:
    """The finetune config with debug=smoke, writing under tmp_path."""
    return compose_cfg("finetune", ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}"])
