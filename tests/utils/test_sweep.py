"""amqs.utils.sweep: under Hydra multirun every job gets a run folder of its own.

The unit tests compose the real configs with ``return_hydra_config=True`` and install them as the job's
HydraConfig, the way Hydra's launcher does for each job; the slow test runs a real ``amqs-search -m`` sweep of
the smoke config.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from amqs.config import CONF_DIR, register_configs
from amqs.finetune import run as finetune, teacher_dir
from amqs.utils.run import run_dir
from amqs.utils.sweep import MASTER_FILE, claim, hydra_job, name_suffix, swept_keys
from tests.conftest import REPO, compose_cfg

BASE = "sst2-bert-tiny-default-compression13.0"  # the smoke search's name


@pytest.fixture
def as_job() -> Iterator:
    """``as_job(app, overrides, sweep_dir, num, mode)``: the composed config of one job, its HydraConfig installed."""
    def make(app: str, overrides: list[str], sweep_dir: Path, num: int = 0, mode: str = "MULTIRUN") -> DictConfig:
        register_configs()
        hydra = [f"hydra.mode={mode}", f"hydra.job.num={num}", f"hydra.sweep.dir={sweep_dir}"]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(app, overrides=overrides + hydra, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield make
    HydraConfig.instance().cfg = None


def _sweep(sweep_dir: Path, task: list[str], params: dict | None = None) -> None:
    """The sweeper's record of the sweep as asked for (what Hydra writes before the first job)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    master = {"hydra": {"overrides": {"task": task, "hydra": []}, "sweeper": {"params": params}}}
    (sweep_dir / MASTER_FILE).write_text(yaml.safe_dump(master))


def test_each_job_is_named_by_its_swept_values(as_job, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _sweep(sweep, ["debug=smoke", "search.lam=1,50", f"paths.results_dir={tmp_path}"])
    folders = []
    for num, lam in enumerate((1, 50)):
        cfg = as_job("search", ["debug=smoke", f"search.lam={lam}", f"paths.results_dir={tmp_path}"], sweep, num)
        command = hydra_job(cfg, "amqs-search", run_dir)
        assert cfg.name == f"{BASE}_search.lam-{lam}"
        folders.append(run_dir(cfg))
        # The recorded command names the run: rerun without -m, it writes the same folder.
        again = compose_cfg("search", shlex.split(command)[1:])
        assert run_dir(again) == run_dir(cfg) and again.search.lam == lam
    assert folders[0] != folders[1]


def test_outside_multirun_nothing_changes(as_job, tmp_path: Path) -> None:
    cfg = as_job("search", ["debug=smoke", "search.lam=5"], tmp_path / "sweep", mode="RUN")
    assert hydra_job(cfg, "amqs-search", run_dir) == "amqs-search debug=smoke search.lam=5"
    assert cfg.name == BASE and not (tmp_path / "sweep").exists()


def test_a_teacher_sweep_names_the_default_folder(as_job, tmp_path: Path) -> None:
    """amqs-finetune's name is null by default (the folder is <model>-<task>): the suffix goes on that."""
    sweep = tmp_path / "sweep"
    _sweep(sweep, ["debug=smoke"], params={"train.lr": "1e-3,2e-3"})  # a sweep given in hydra.sweeper.params
    cfg = as_job("finetune", ["debug=smoke", "train.lr=2e-3", f"paths.results_dir={tmp_path}"], sweep)
    hydra_job(cfg, "amqs-finetune", teacher_dir)
    assert teacher_dir(cfg) == tmp_path / "teachers" / "bert-tiny-sst2_train.lr-0.002"


def test_a_given_name_is_kept_and_may_not_collide(as_job, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _sweep(sweep, ["name=mine", "search.lam=1,50"])
    cfg = as_job("search", ["name=mine", "search.lam=1"], sweep, 0)
    hydra_job(cfg, "amqs-search", run_dir)
    assert cfg.name == "mine"
    hydra_job(cfg, "amqs-search", run_dir)  # the same job again (a resumed sweep): its own claim
    cfg = as_job("search", ["name=mine", "search.lam=50"], sweep, 1)
    with pytest.raises(FileExistsError, match=r"jobs 0 and 1 of this sweep would both write .*runs/mine; the name= "
                                              r"given is the same for both"):
        hydra_job(cfg, "amqs-search", run_dir)


def test_swept_keys_and_suffixes(tmp_path: Path) -> None:
    assert swept_keys(tmp_path / MASTER_FILE) is None  # no record: every override of the job names it
    _sweep(tmp_path, ["debug=smoke", "budget=c13,c16_2", "train.seed=range(0,3)", "+x=choice(a,b)"],
           {"search.lam": "1,2"})
    assert swept_keys(tmp_path / MASTER_FILE) == {"budget", "train.seed", "x", "search.lam"}
    assert name_suffix(["debug=smoke", "budget=c16_2", "train.seed=2"], {"budget", "train.seed"}) == \
        "budget-c16_2_train.seed-2"
    long = name_suffix([f"k{i}=" + "v" * 20 for i in range(10)], None)
    assert len(long) == 120 and long != name_suffix([f"k{i}=" + "v" * 20 for i in range(11)], None)


def test_claims_are_per_folder(tmp_path: Path) -> None:
    claim(tmp_path / "claims", tmp_path / "runs" / "a", 0, given=False)
    claim(tmp_path / "claims", tmp_path / "runs" / "b", 1, given=False)
    with pytest.raises(FileExistsError, match="their swept values give the same name"):
        claim(tmp_path / "claims", tmp_path / "runs" / "a", 2, given=False)


def _cli(args: list[str], timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amqs.search.app", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_a_real_sweep_writes_one_run_per_job(tmp_path: Path, glue_dir: Path) -> None:
    base = ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}", "train.num_threads=1"]
    finetune(compose_cfg("finetune", base))
    proc = _cli(["-m", "search.lam=1,50", *base])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tokenize:" not in proc.stderr  # debug=smoke: train.progress=false
    for lam in (1, 50):
        metrics = json.loads((tmp_path / "runs" / f"{BASE}_search.lam-{lam}" / "metrics.json").read_text())
        assert metrics["command"].endswith(f"name={BASE}_search.lam-{lam}")
    rows = (tmp_path / "search.csv").read_text().splitlines()
    assert len(rows) == 3 and all(f"runs/{BASE}_search.lam-{lam}," in "\n".join(rows) for lam in (1, 50))
    assert list((tmp_path / "logs" / "search" / "multirun").glob(f"*/{MASTER_FILE}"))  # the sweep's logs

    proc = _cli(["-m", "name=mine", "search.lam=1,50", *base])  # one name for both jobs: the second refuses
    assert proc.returncode == 2 and (tmp_path / "runs" / "mine" / "metrics.json").is_file()
    assert "amqs-search: jobs 0 and 1 of this sweep would both write" in proc.stderr
