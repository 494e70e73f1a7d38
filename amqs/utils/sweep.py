"""Hydra multirun: every job of a sweep gets a run folder of its own.

    amqs-search -m search.lam=1,50 debug=smoke
    # -> outputs/smoke/runs/sst2-bert-tiny-default-compression13.0_search.lam-1
    #    outputs/smoke/runs/sst2-bert-tiny-default-compression13.0_search.lam-50

A run's folder is named by ``name`` (``<results_dir>/runs/<name>``), which by default leaves out most keys
(λ, the seed, learning rates): the jobs of a sweep over one of those would all write one folder, and the
second would find another config's run there. Under ``-m`` the name therefore gets the job's values of the
swept keys (``_<key>-<value>`` each, in safe characters); a ``name=`` given on the command line is kept as
it is. Either way, each job claims its folder in the sweep's log folder (``hydra.sweep.dir``) before it
starts, so two jobs of one sweep that would share a folder fail with a one-line error instead of mixing
their runs.

Example (an entry point)::

    @hydra.main(config_path=str(CONF_DIR), config_name="search", version_base="1.3")
    def main(cfg):
        with user_errors("amqs-search"):
            run(cfg, command=hydra_job(cfg, "amqs-search", run_dir))
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml
from omegaconf import DictConfig

from amqs.utils.run import command_line

MASTER_FILE = "multirun.yaml"  # written by Hydra's sweeper in hydra.sweep.dir: the sweep as it was asked for
CLAIMS = ".run_folders"  # in hydra.sweep.dir: one file per run folder a job of the sweep writes
MAX_SUFFIX = 120  # characters; a longer suffix is cut and keeps a hash of the whole


def hydra_job(cfg: DictConfig, program: str, folder: Callable[[DictConfig], Path]) -> str:
    """Ready ``cfg`` for this Hydra job; returns the command line that reproduces it.

    Under multirun, ``cfg.name`` gets the job's swept values (:func:`name_suffix`) unless ``name=`` was given,
    and the job claims ``folder(cfg)`` (its run folder) in the sweep; the command then names the run
    (``name=...``), so that rerunning it without ``-m`` writes the same folder. Outside multirun nothing changes.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    if hc.mode != RunMode.MULTIRUN:
        return command_line(program, overrides)
    sweep_dir = Path(hc.runtime.cwd, hc.sweep.dir)
    given = "name" in override_keys(overrides)
    if not given:
        suffix = name_suffix(overrides, swept_keys(sweep_dir / MASTER_FILE))
        cfg.name = f"{cfg.name or folder(cfg).name}_{suffix}"
        overrides.append(f"name={cfg.name}")
    claim(sweep_dir / CLAIMS, folder(cfg), int(hc.job.num), given)
    return command_line(program, overrides)


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The keys (or config groups) of Hydra command-line overrides.

    Example:
        >>> override_keys(["search.lam=1,50", "debug=smoke", "+x=2"])
        ['search.lam', 'debug', 'x']
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))]


def swept_keys(master_file: Path) -> Optional[set[str]]:
    """The keys a sweep varies, read from the sweeper's ``multirun.yaml``; None when there is none.

    Example::

        swept_keys(Path("outputs/logs/search/multirun/2025-01-01_00-00-00/multirun.yaml"))   # {'search.lam'}
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not master_file.is_file():
        return None
    hydra = yaml.safe_load(master_file.read_text())["hydra"]  # plain YAML: its interpolations stay text
    params = (hydra.get("sweeper") or {}).get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + list(hydra["overrides"]["task"])
    return {o.key_or_group for o in OverridesParser.create().parse_overrides(lines) if o.is_sweep_override()}


def name_suffix(job_overrides: Sequence[str], swept: Optional[set[str]]) -> str:
    """``<key>-<value>`` of each of the job's overrides whose key the sweep varies (all of them when ``swept`` is
    None), joined by ``_``, in characters that are safe in a folder name and in a Hydra override.

    Example:
        >>> name_suffix(["debug=smoke", "search.lam=50", "train.lr=1e-3"], {"search.lam", "train.lr"})
        'search.lam-50_train.lr-0.001'
        >>> name_suffix(["data.glue_dir=/a/b c"], None)
        'data.glue_dir-_a_b_c'
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    items = [f"{o.key_or_group}-{o.get_value_element_as_str()}"
             for o in OverridesParser.create().parse_overrides(list(job_overrides))
             if swept is None or o.key_or_group in swept]
    suffix = re.sub(r"[^A-Za-z0-9.+-]+", "_", "_".join(items)) or "job"
    if len(suffix) > MAX_SUFFIX:
        suffix = suffix[:MAX_SUFFIX - 9] + "-" + hashlib.sha256(suffix.encode()).hexdigest()[:8]
    return suffix


def claim(claims: Path, folder: Path, job: int, given: bool) -> None:
    """Record that job ``job`` of a sweep writes ``folder``; another job of the sweep that claimed it fails.

    A rerun of the same sweep (the same ``hydra.sweep.dir``, to resume it) finds its own claims and goes on.
    """
    claims.mkdir(parents=True, exist_ok=True)
    token = claims / hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    try:
        fd = os.open(token, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        other = int(token.read_text().split("\t")[0])
        if other == job:
            return
        why = ("the name= given is the same for both: make it differ per job (e.g. 'name=run-${search.lam}') or drop "
               "it (each job's name then ends in its swept values)" if given else
               "their swept values give the same name: sweep distinct values")
        raise FileExistsError(f"jobs {other} and {job} of this sweep would both write {folder}; {why}") from None
    with os.fdopen(fd, "w") as f:
        f.write(f"{job}\t{folder}\n")


__all__ = ["claim", "hydra_job", "name_suffix", "override_keys", "swept_keys"]
