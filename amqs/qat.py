"""``amqs-qat``: quantization-aware training of a fixed recipe from the fp32 teacher.

    amqs-qat quant=w8a8 teacher=shared_sst2          # Q8BERT-style baseline on SST-2
    amqs-qat quant=w2a8 data.max_train_examples=12800
    amqs-qat debug=smoke quant=w4a8                  # tiny model, seconds
    amqs-qat recipe=qbert teacher=shared_sst2        # a literature recipe (conf/recipe/, docs/recipes.md)
    amqs-qat assignment=results/runs/sst2-default-compression13.0/bits.json quant.name=my-bits   # given bits

Writes ``<paths.results_dir>/runs/<name>/`` (default ``outputs/runs/<task>-<model>-<method>``: bits.json,
metrics.json, config.yaml, train_log.jsonl, student.pt) and upserts its row of ``<paths.results_dir>/baselines.csv``
(key: the run folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import yaml
from omegaconf import DictConfig

from amqs.config import CONF_DIR, register_configs
from amqs.quant.assignment import BitAssignment
from amqs.train.qat import run_qat
from amqs.train.staged import run_staged
from amqs.utils.cli import user_errors
from amqs.utils.run import check_results_dir, check_writable, run_dir, table_row, upsert_csv
from amqs.utils.sweep import hydra_job

BASELINE_COLUMNS = ("run", "task", "model", "method", "weight_bits", "act_bits", "emb_bits", "encoder_bytes",
                    "total_bytes", "compression", "dev_accuracy", "dev_f1", "dev_macro_f1", "train_examples", "epochs", "seconds",
                    "threads", "cpu", "config_hash", "command")


def run(cfg: DictConfig, command: str = "amqs-qat") -> dict[str, Any]:
    """Train (or reuse) the run, in stages for a staged recipe; record it in <results_dir>/baselines.csv."""
    check_results_dir(cfg.paths.results_dir, smoke=cfg.smoke, model_source=cfg.model.source)
    check_writable(Path(cfg.paths.results_dir) / "baselines.csv")
    metrics = train(cfg, command)
    record(metrics, cfg.paths.results_dir)
    return metrics


def train(cfg: DictConfig, command: str = "amqs-qat") -> dict[str, Any]:
    """Train (or reuse) the run in ``<results_dir>/runs/<name>``, in stages for a staged recipe; return its metrics
    (no table)."""
    if cfg.get("assignment"):
        return run_qat(cfg, load_assignment_file(cfg), command=command)
    if cfg.get("staged") is not None:
        return run_staged(cfg, command=command)
    return run_qat(cfg, command=command)


def load_assignment_file(cfg: DictConfig) -> BitAssignment:
    """The ``assignment=`` file, after checking that nothing else sets the bits and that the run is named."""
    path = Path(cfg.assignment)
    others = [k for k in ("mixed", "staged", "init_from", "budget") if cfg.get(k)] + (["quant.tws"] if cfg.quant.tws else [])
    if others:
        raise ValueError(f"assignment={path} sets the bits itself; it does not combine with {', '.join(others)}")
    presets = {yaml.safe_load(f.read_text()).get("name") for f in (CONF_DIR / "quant").glob("*.yaml")}
    presets |= {f.stem for f in (CONF_DIR / "recipe").glob("*.yaml")}
    if cfg.quant.name in presets:
        raise ValueError(f"assignment={path} needs its own method name: add quant.name=<method> (the run folder "
                         f"<results_dir>/runs/<task>-<model>-<method> and its row of baselines.csv); {cfg.quant.name!r} is the "
                         "name of a preset or recipe and would replace its row")
    if not path.is_file():
        raise FileNotFoundError(f"assignment={path}: no such file (amqs-search writes <results_dir>/runs/<name>/bits.json)")
    return BitAssignment.from_json(path)


def record(metrics: dict[str, Any], results_dir: str | Path, **changes: Any) -> None:
    """Upsert a run's row of ``<results_dir>/baselines.csv`` (key: the run folder); ``changes`` override fields."""
    row = {**table_row(metrics, BASELINE_COLUMNS), **changes}
    upsert_csv(Path(results_dir) / "baselines.csv", row, key=("run",), columns=BASELINE_COLUMNS)


register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="qat", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors("amqs-qat"):
        run(cfg, command=hydra_job(cfg, "amqs-qat", run_dir))


if __name__ == "__main__":
    main()
