"""conf/hydra/launcher/: the workers of one study started by one command (joblib here, Slurm on a cluster)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from amqs.config import CONF_DIR, register_configs
from amqs.outer.storage import load_study
from tests.conftest import REPO
from tests.outer.studies import STUDY, check_exactly, smoke_study


def _launcher(name: str) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("search", overrides=["outer=optuna", f"hydra/launcher={name}"], return_hydra_config=True)
    return cfg.hydra.launcher


def test_the_launcher_presets_compose_with_their_documented_settings() -> None:
    local = _launcher("workers")
    assert local._target_.endswith("JoblibLauncher") and local.n_jobs == 2 and local.prefer == "processes"
    slurm = _launcher("slurm")
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.partition, slurm.cpus_per_task, slurm.gpus_per_node, slurm.mem_gb, slurm.timeout_min) == \
        (None, 4, 0, 16, 720)
    text = (CONF_DIR / "hydra" / "launcher" / "slurm.yaml").read_text()
    assert all(f"{key}:" in text and "#" in text.split(f"{key}:")[1].splitlines()[0]
               for key in ("partition", "cpus_per_task", "gpus_per_node", "mem_gb", "timeout_min"))


@pytest.mark.slow
def test_one_command_starts_the_workers_of_one_study(tmp_path: Path, glue_dir: Path, smoke_teacher: Path) -> None:
    overrides = smoke_study(tmp_path, glue_dir, smoke_teacher)
    cmd = [sys.executable, "-m", "amqs.search.app", "-m", *overrides, "outer.worker=range(2)", "outer.n_trials=3",
           "hydra/launcher=workers", f"hydra.sweep.dir={tmp_path}/logs/sweep"]
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path},
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    study = load_study(tmp_path / "studies" / STUDY)  # the default SQLite file, shared by both workers
    check_exactly(study.trials, 3, tmp_path / "studies" / STUDY)
    workers = {t.user_attrs["worker"] for t in study.trials if "worker" in t.user_attrs}
    assert len(workers) == 2 and str(os.getpid()) not in {w.rsplit(":", 1)[1] for w in workers}
