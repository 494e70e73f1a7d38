"""``amqs-search``: supernet search -> derive -> retrain -> evaluate for one size budget.

    amqs-search teacher=shared_sst2 budget=c13                  # SST-2, default space, 13x encoder compression
    amqs-search search=aqbert budget.kind=avg_bits budget.value=3
    amqs-search debug=smoke                                     # tiny model, seconds
    torchrun --nproc_per_node=2 -m amqs.search.app debug=smoke  # the search on 2 processes (gloo on CPU)
    amqs-search outer=optuna debug=smoke                        # an Optuna study (amqs.outer.study)
    amqs-search -m search.lam=1,50 debug=smoke                  # a sweep: a run folder per job (amqs.utils.sweep)
    amqs-search -m outer=optuna debug=smoke outer.worker='range(2)' hydra/launcher=workers   # 2 workers, 1 study

Writes ``<paths.results_dir>/runs/<name>/`` (see amqs.search.run; default ``outputs/runs/<task>-<model>-<space>-
<budget>``) and its row of ``<paths.results_dir>/search.csv``; with ``outer=...``, a study in
``<paths.results_dir>/studies/<outer.name>/`` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from amqs.config import CONF_DIR, register_configs
from amqs.outer.study import run_study
from amqs.search.run import run_search
from amqs.train.distill import distill_label
from amqs.utils.cli import user_errors
from amqs.utils.run import (check_results_dir, check_writable, command_line, relative_run, run_dir, table_row,
                            upsert_csv)
from amqs.utils.sweep import hydra_job

SEARCH_COLUMNS = ("run", "task", "model", "space", "distill", "teacher", "budget_compression", "lam", "seed",
                  "encoder_bytes", "compression", "total_bytes", "total_compression", "size_scope", "avg_bits",
                  "pruned_fraction", "dev_accuracy", "dev_f1", "dev_macro_f1", "train_examples", "epochs", "seconds",
                  "threads", "cpu", "entropy_fraction", "expected_over_budget", "repair_fraction", "undecided",
                  "moved_fraction", "config_hash", "command")


def run(cfg: DictConfig, command: str = "amqs-search") -> dict[str, Any]:
    """Run (or reuse) one budget and record it in <results_dir>/search.csv; with ``cfg.outer``, run the study."""
    check_results_dir(cfg.paths.results_dir, smoke=cfg.smoke, model_source=cfg.model.source)
    if cfg.get("outer") is not None:
        return run_study(cfg, command=command)
    check_writable(Path(cfg.paths.results_dir) / "search.csv")
    m = run_search(cfg, command=command)
    if not m:  # a non-main torchrun rank: rank 0 writes the results
        return m
    row = {**table_row(m, SEARCH_COLUMNS), "run": relative_run(run_dir(cfg), cfg.paths.results_dir),
           "model": cfg.model.name, "lam": cfg.search.lam, "seed": cfg.train.seed,
           # of the budget's scope: the encoder, or the whole model for total_* budgets
           "budget_compression": m[f"fp32_{m.get('size_scope', 'encoder')}_bytes"] / m["target_bytes"],
           "epochs": (f"search {m['search_epochs']}" if m.get("method", "darts") == "darts" else m["method"])
           + f" + retrain {m['retrain_epochs']}",
           "teacher": m.get("teacher", cfg.teacher.source), "distill": distill_label(cfg.distill)}
    upsert_csv(Path(cfg.paths.results_dir) / "search.csv", row, key=("run",), columns=SEARCH_COLUMNS)
    return m


register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="search", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors("amqs-search"):
        run(cfg, command=_command(cfg))


def _command(cfg: DictConfig) -> str:
    """The command of this job. The jobs of a study's sweep (``-m outer.worker=...``, conf/hydra/launcher/) are
    workers of one study, which names each trial's folder itself: they keep ``name`` (part of the study's config)."""
    if cfg.get("outer") is not None:
        from hydra.core.hydra_config import HydraConfig

        return command_line("amqs-search", list(HydraConfig.get().overrides.task))
    return hydra_job(cfg, "amqs-search", run_dir)


if __name__ == "__main__":
    main()
