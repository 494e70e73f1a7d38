"""``amqs-finetune``: fine-tune and evaluate the fp32 teacher of a GLUE task.

    amqs-finetune data=sst2 train.epochs=1 train.lr=5e-5 data.max_length=64
    amqs-finetune debug=smoke                       # tiny model, a few hundred rows, seconds
    python -m amqs.finetune experiment=mrpc_teacher

Writes ``<paths.results_dir>/teachers/<model>-<task>/`` (default ``outputs/``): ``model/`` (HF folder),
``metrics.json``, ``config.yaml`` (resolved), ``train_log.jsonl``, and its row of ``teachers.csv`` there. A
teacher already there with the same config is reused; a killed run resumes from ``checkpoint/``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import datasets
import hydra
import torch
from omegaconf import DictConfig

from amqs.config import CONF_DIR, register_configs
from amqs.data import load_glue, task_spec, make_loader
from amqs.models import load_classifier
from amqs.train import evaluate, fit, seed_everything
from amqs.train.precision import pin_precision
from amqs.utils.cli import user_errors
from amqs.utils.dist import resolve_device
from amqs.utils.run import (check_results_dir, check_writable, config_hash, git_revision, prepare_run_dir,
                            relative_run, save_config, table_row, upsert_csv, write_json)
from amqs.utils.provenance import data_fingerprint, provenance
from amqs.utils.sweep import hydra_job

log = logging.getLogger(__name__)

TEACHER_COLUMNS = ("run", "task", "model", "search_val", "dev_accuracy", "dev_f1", "dev_macro_f1", "epochs", "train_examples",
                   "max_length", "seconds", "threads", "cpu", "config_hash", "command")


def teacher_dir(cfg: DictConfig) -> Path:
    """``<results_dir>/teachers/<model>-<task>``; ``-heldout`` when the search-val split was kept out of
    training (``train.use_search_val=false``), so that students selected on search-val are not
    selected on rows their teacher memorised (conf/teacher/heldout.yaml points here). ``name``, when set,
    is the folder's name instead (amqs-replay's ``<teacher>-replay``)."""
    if cfg.get("name"):
        return Path(cfg.paths.results_dir) / "teachers" / cfg.name
    suffix = "" if cfg.train.use_search_val else "-heldout"
    return Path(cfg.paths.results_dir) / "teachers" / f"{cfg.model.name}-{cfg.data.task}{suffix}"


def run(cfg: DictConfig, command: str = "amqs-finetune") -> dict[str, Any]:
    """Fine-tune (or reuse) the teacher described by ``cfg``, and upsert its row of ``teachers.csv``."""
    metrics = finetune(cfg, command)
    upsert_csv(Path(cfg.paths.results_dir) / "teachers.csv", table_row(metrics, TEACHER_COLUMNS), key=("run",),
               columns=TEACHER_COLUMNS)
    return metrics


def finetune(cfg: DictConfig, command: str = "amqs-finetune") -> dict[str, Any]:
    """Fine-tune (or reuse) the teacher described by ``cfg`` in its folder; return its metrics (no table)."""
    out = teacher_dir(cfg)
    device = str(resolve_device(cfg.device))
    cfg = pin_precision(cfg, device)
    if cfg.train.init != "rtn":
        raise ValueError(f"train.init={cfg.train.init} starts a quantized student (amqs-qat, amqs-search); a teacher "
                         "fine-tunes from the model's own weights: drop it")
    check_results_dir(cfg.paths.results_dir, smoke=cfg.smoke, model_source=cfg.model.source)
    check_writable(Path(cfg.paths.results_dir) / "teachers.csv")
    fp = config_hash(cfg)
    done = prepare_run_dir(out, fp, cfg.overwrite, require=("model",))
    if done is not None:
        log.info("reusing the teacher in %s (same config %s)", out, fp)
        return done
    ckpt = out / "checkpoint"

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed)
    task = task_spec(cfg.data)
    splits = load_glue(cfg.data)
    train_ds = (datasets.concatenate_datasets([splits["train"], splits["search_val"]])
                if cfg.train.use_search_val else splits["train"])
    model, tokenizer = load_classifier(cfg.model, task.num_labels)
    # The label names travel with the model (its config.json): students, exports and amqs-predict read them there.
    model.config.id2label = dict(enumerate(task.label_names))
    model.config.label2id = {n: i for i, n in model.config.id2label.items()}
    train_loader = make_loader(train_ds, tokenizer, max_length=cfg.data.max_length,
                               batch_size=cfg.train.batch_size, shuffle=True, seed=cfg.train.seed,
                               progress=cfg.train.progress)
    dev_loader = make_loader(splits["dev"], tokenizer, max_length=cfg.data.max_length,
                             batch_size=cfg.train.eval_batch_size, shuffle=False, progress=cfg.train.progress)
    log.info("fine-tuning %s on %s: %d train rows, %d dev rows -> %s",
             cfg.model.source, task.name, len(train_ds), len(splits["dev"]), out)
    result = fit(model, train_loader, cfg.train, ckpt_dir=ckpt, log_file=out / "train_log.jsonl",
                 device=device, desc=f"finetune {task.name}")
    dev = evaluate(model, dev_loader, task.metrics, device=device)
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    save_config(cfg, out / "config.yaml")
    metrics = {
        "task": task.name, "model": cfg.model.name, "source": cfg.model.source,
        "search_val": "trained on" if cfg.train.use_search_val else "held out",
        "dev_accuracy": dev["accuracy"], "dev_f1": dev.get("f1"), "dev_macro_f1": dev["macro_f1"], "dev_examples": dev["examples"],
        "epochs": cfg.train.epochs, "train_rows": len(train_ds), "train_examples": result.train_examples,
        "steps": result.steps, "max_length": cfg.data.max_length, "seconds": round(result.seconds, 1),
        "threads": torch.get_num_threads(), "final_loss": result.final_loss, "config_hash": fp,
        "git_revision": git_revision(), "command": command, "run": relative_run(out, cfg.paths.results_dir),
        "provenance": provenance(device, torch.get_num_threads(), cfg.train.precision),
        "data_fingerprint": data_fingerprint(splits, task.name),
    }
    write_json(out / "metrics.json", metrics)
    shutil.rmtree(ckpt)
    log.info("dev %s: %s", task.name, {k: v for k, v in dev.items()})
    return metrics


register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors("amqs-finetune"):
        run(cfg, command=hydra_job(cfg, "amqs-finetune", teacher_dir))


if __name__ == "__main__":
    main()
