"""Quantization-aware training of a fixed bit assignment, starting from the fp32 teacher.

The student is a copy of the teacher with the assignment's Linears and embeddings swapped for
fake-quantized modules; it trains on the train split (search-validation held out) with the task
loss plus distillation from the frozen teacher, and is evaluated on dev (and search-val, the
split later used for model selection). Used by ``amqs-qat`` (the baselines) and by the search's
retrain step.

Example::

    metrics = run_qat(cfg)                            # uniform recipe from cfg.quant
    metrics = run_qat(cfg, BitAssignment.from_json(p)) # a searched assignment
"""

from __future__ import annotations

import copy
import re
import logging
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig
from torch import nn

from amqs.config import ModelConfig
from amqs.data import get_task, load_glue, make_loader
from amqs.models import load_classifier
from amqs.quant import BitAssignment, apply_assignment, model_size, uniform_assignment
from amqs.quant.surgery import DEFAULT_EMBEDDING_PATTERNS, DEFAULT_LINEAR_PATTERNS, select_modules
from amqs.train.distill import DistillLoss
from amqs.train.loop import fit, seed_everything
from amqs.train.metrics import evaluate
from amqs.utils.run import config_hash, fingerprint, git_revision, prepare_run_dir, save_config, write_json

log = logging.getLogger(__name__)

STUDENT_FILE = "student.pt"  # fake-quant student state (latent weights, ranges, steps); not in git


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.results_dir) / "runs" / cfg.name


def load_teacher(cfg: DictConfig, num_labels: int):
    """The fp32 teacher named by ``cfg.teacher.source``; a clear error says how to make one."""
    source = cfg.teacher.source
    if not Path(source).is_dir() and (source.startswith((".", "/", "~")) or "/" in source):
        raise FileNotFoundError(
            f"teacher.source={source!r} does not exist: fine-tune it first with "
            f"`amqs-finetune model={cfg.model.name} data={cfg.data.task}`-equivalent settings, or point "
            "teacher.source at an HF folder (teacher=shared_sst2 uses ../shared/models/minilm-l6-sst2)"
        )
    return load_classifier(ModelConfig(name=cfg.model.name, source=source), num_labels)


def build_assignment(model: nn.Module, cfg: DictConfig) -> Optional[BitAssignment]:
    """The uniform assignment of ``cfg.quant``; None when nothing is quantized (fp32)."""
    q = cfg.quant
    if q.weight_bits == 32 and q.act_bits in (None, 32) and q.emb_bits == 32:
        return None
    embeddings = (list(q.embedding_targets) or DEFAULT_EMBEDDING_PATTERNS) if q.emb_bits != 32 else ()
    targets = list(q.targets) or DEFAULT_LINEAR_PATTERNS
    # quant.subgroups per matrix, or one per row for a matrix with fewer rows (tiny test models).
    subgroups = {re.escape(n): min(q.subgroups, model.get_submodule(n).out_features)
                 for n in select_modules(model, targets)}
    return uniform_assignment(
        model, targets, q.weight_bits, num_subgroups=subgroups,
        scheme=q.scheme, act_bits=q.act_bits, embedding_patterns=embeddings, embedding_bits=q.emb_bits,
        embedding_num_subgroups=q.emb_subgroups, meta={"method": q.name},
    )


def quantize_student(teacher: nn.Module, assignment: Optional[BitAssignment], cfg: DictConfig) -> tuple[nn.Module, list[str]]:
    """A copy of the teacher with ``assignment`` applied (the teacher is left untouched)."""
    student = copy.deepcopy(teacher)
    if assignment is None:
        return student, []
    q = cfg.quant
    replaced = apply_assignment(student, assignment, act_symmetric=q.act_symmetric, act_lsq=q.act_lsq,
                                act_momentum=q.act_momentum)
    return student, replaced


def run_qat(cfg: DictConfig, assignment: Optional[BitAssignment] = None, command: str = "",
            student_init: Optional[str] = None) -> dict[str, Any]:
    """Train and evaluate one fixed assignment; write ``results/runs/<name>/``; return its metrics.

    The student starts from the teacher's weights, or from ``student_init`` (an HF id/folder, e.g.
    the pretrained encoder: AQ-BERT's re-initialisation); the teacher distils either way.
    """
    out = run_dir(cfg)
    fp = config_hash(cfg)
    if assignment is not None:
        fp += "-" + fingerprint({"bits": assignment.to_dict(), "init": student_init})
    done = prepare_run_dir(out, fp, cfg.overwrite)
    if done is not None:
        log.info("reusing the finished run in %s", out)
        return done
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed)
    task = get_task(cfg.data.task)
    splits = load_glue(cfg.data)
    teacher, tokenizer = load_teacher(cfg, task.num_labels)
    if assignment is None:
        assignment = build_assignment(teacher, cfg)
    base = teacher
    if student_init is not None:
        base, _ = load_classifier(ModelConfig(name=cfg.model.name, source=student_init), task.num_labels)
    student, replaced = quantize_student(base, assignment, cfg)
    log.info("quantized %d modules (%s): %s", len(replaced), cfg.quant.name, ", ".join(replaced))
    if assignment is not None:
        assignment.to_json(out / "bits.json")
    size = model_size(student)

    def loader(split: str, train: bool):
        return make_loader(splits[split], tokenizer, max_length=cfg.data.max_length,
                           batch_size=cfg.train.batch_size if train else cfg.train.eval_batch_size,
                           shuffle=train, seed=cfg.train.seed)

    dev_loader = loader("dev", False)
    # Post-training quantization accuracy (ranges from the first batches), before any training.
    ptq = evaluate(student, dev_loader, task.metrics, device=cfg.device)
    d = cfg.distill
    loss_fn = DistillLoss(teacher if (d.kd_weight or d.hidden_weight) else None, d)
    result = fit(student, loader("train", True), cfg.train, loss_fn=loss_fn, ckpt_dir=out / "checkpoint",
                 log_file=out / "train_log.jsonl", device=cfg.device, desc=f"qat {cfg.name}")
    dev = evaluate(student, dev_loader, task.metrics, device=cfg.device)
    search_val = (evaluate(student, loader("search_val", False), task.metrics, device=cfg.device)
                  if cfg.eval_search_val else {})
    torch.save(student.state_dict(), out / STUDENT_FILE)
    save_config(cfg, out / "config.yaml")
    metrics = {
        "task": task.name, "method": cfg.quant.name, "teacher": cfg.teacher.source, "student_init": student_init,
        "weight_bits": cfg.quant.weight_bits, "act_bits": cfg.quant.act_bits, "emb_bits": cfg.quant.emb_bits,
        "scheme": cfg.quant.scheme, "replaced_modules": replaced,
        "encoder_bytes": size.encoder_bytes, "total_bytes": size.total_bytes,
        "fp32_encoder_bytes": size.fp32_encoder_bytes, "fp32_total_bytes": size.fp32_total_bytes,
        "compression": round(size.encoder_compression, 3), "total_compression": round(size.total_compression, 3),
        "dev_accuracy": dev["accuracy"], "dev_f1": dev.get("f1"),
        "dev_accuracy_ptq": ptq["accuracy"],
        "search_val_accuracy": search_val.get("accuracy"), "search_val_f1": search_val.get("f1"),
        "train_examples": result.train_examples, "epochs": cfg.train.epochs, "steps": result.steps,
        "seconds": round(result.seconds, 1), "final_loss": result.final_loss,
        "config_hash": fp, "git_revision": git_revision(), "command": command,
    }
    write_json(out / "metrics.json", metrics)
    shutil.rmtree(out / "checkpoint")
    log.info("%s: dev %s (PTQ %s), encoder %d B (%.2fx)", cfg.name, dev, ptq, size.encoder_bytes,
             size.encoder_compression)
    return metrics
