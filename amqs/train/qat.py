"""Quantization-aware training of a fixed bit assignment, starting from the fp32 teacher.

The student is a copy of the teacher with the assignment's Linears and embeddings swapped for
fake-quantized modules; it trains on the train split (search-validation held out) with the task
loss plus distillation from the frozen teacher, and is evaluated on dev (and search-val, the
split later used for model selection). Used by ``amqs-qat`` (the baselines) and by the search's
retrain step.

Example::

    metrics = run_qat(cfg)                            # uniform recipe from cfg.quant (or a recipe: docs/recipes.md)
    metrics = run_qat(cfg, BitAssignment.from_json(p)) # a searched assignment
"""

from __future__ import annotations

import copy
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from amqs.config import ModelConfig, PathsConfig, group_option
from amqs.data import load_glue, task_spec, make_loader
from amqs.models import load_classifier
from amqs.models.family import under_prefix
from amqs.quant import (ActQuant, BitAssignment, QuantEmbedding, QuantLinear, apply_assignment, extract_assignment,
                        model_size, uniform_assignment)
from amqs.quant.size import ENCODER_PREFIX
from amqs.quant.split import split_ternary_linears
from amqs.quant.targets import DEFAULT_EMBEDDING_PATTERNS, DEFAULT_LINEAR_PATTERNS, select_modules
from amqs.train.distill import DistillLoss
from amqs.train.loop import STATE_FILE, fit, seed_everything
from amqs.train.metrics import evaluate, evaluate_with_predictions
from amqs.train.precision import pin_precision
from amqs.train.reconstruct import INITS, ReconstructConfig, calibration_batches, reconstruct
from amqs.utils.dist import resolve_device
from amqs.utils.run import (config_hash, fingerprint, git_revision, prepare_run_dir, relative_run, run_dir,
                            save_config, shared_models_dir, write_json)
from amqs.utils.provenance import data_fingerprint, provenance

log = logging.getLogger(__name__)

STUDENT_FILE = "student.pt"  # fake-quant student state (latent weights, ranges, steps); not in git
# The trained student's dev predictions, per example in dev order (amqs.report.compare pairs runs on them); in git.
PREDICTIONS_FILE = "dev_predictions.json"


def load_teacher(cfg: DictConfig, num_labels: int):
    """The fp32 teacher named by ``cfg.teacher.source`` (:func:`resolve_teacher`)."""
    return load_classifier(ModelConfig(name=cfg.model.name, source=resolve_teacher(cfg)), num_labels)


AUTO_TEACHER = "auto"


def teacher_candidates(cfg: DictConfig) -> list[Path]:
    """Where ``teacher=auto`` looks, best first: the shared teachers ($AMQS_SHARED_DIR or ../shared), held out
    from search-val first, then the ones amqs-finetune wrote under ``paths.results_dir``."""
    name = f"{cfg.model.name}-{cfg.data.task}"
    shared = shared_models_dir()
    teachers = Path(cfg.paths.results_dir) / "teachers"
    return [shared / f"{name}-heldout", shared / name, teachers / f"{name}-heldout" / "model",
            teachers / name / "model"]


def pin_teacher(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``teacher=auto`` replaced by the folder it finds (a copy; other teachers unchanged), so the
    run's hash, saved config and table rows name the teacher it really used."""
    if str(cfg.teacher.source) != AUTO_TEACHER:
        return cfg
    pinned = cfg.copy()
    pinned.teacher.source = resolve_teacher(cfg)
    return pinned


def resolve_teacher(cfg: DictConfig) -> str:
    """The teacher's folder or hub id: ``auto`` picks the first of :func:`teacher_candidates` that exists; a
    path that does not exist fails with the command that makes it."""
    source = str(cfg.teacher.source)
    if source == AUTO_TEACHER:
        found = next((p for p in teacher_candidates(cfg) if (p / "config.json").is_file()), None)
        if found is None:
            raise FileNotFoundError(f"teacher=auto found no teacher for {cfg.model.name} on {cfg.data.task} (looked "
                                    f"in {', '.join(map(str, teacher_candidates(cfg)))}): make one with "
                                    f"`{finetune_command(cfg)} train.use_search_val=false`, or run amqs-pipeline, "
                                    "which fine-tunes it")
        return str(found)
    if not Path(source).expanduser().is_dir() and (source.startswith((".", "/", "~")) or "/" in source):
        raise FileNotFoundError(f"teacher.source={source} does not exist: make it with `{finetune_command(cfg)}`, "
                                "or choose another teacher (teacher=shared_sst2: ../shared/models/minilm-l6-sst2)")
    return source


def finetune_command(cfg: DictConfig) -> str:
    """The ``amqs-finetune`` command that writes the teacher folder ``teacher=finetuned|heldout`` points at.

    Example:
        >>> from omegaconf import OmegaConf
        >>> finetune_command(OmegaConf.create({"model": {"name": "bert-tiny"}, "data": {"task": "mrpc"},
        ...     "smoke": False, "paths": {"results_dir": "outputs"}, "teacher": {"source": "x/model"}}))
        'amqs-finetune model=bert_tiny data=mrpc'
    """
    parts = ["amqs-finetune"]
    if cfg.get("smoke"):
        parts.append("debug=smoke")
    else:
        model = group_option("model", "name", cfg.model.name)
        parts.append(f"model={model}" if model else f"model.source=<its source> model.name={cfg.model.name}")
    parts.append(_data_overrides(cfg.data))
    if str(cfg.teacher.source).rstrip("/").endswith("-heldout/model"):
        parts.append("train.use_search_val=false")
    default_dir = "outputs/smoke" if cfg.get("smoke") else PathsConfig.results_dir
    if Path(cfg.paths.results_dir) != Path(default_dir):
        parts.append(f"paths.results_dir={cfg.paths.results_dir}")
    return " ".join(parts)


def _data_overrides(data: DictConfig) -> str:
    # A GLUE task is a data preset; your own files are data=files and the keys that name them.
    if not data.get("train_file"):
        return f"data={data.task}"
    keys = ("task", "train_file", "validation_file", "text_column", "text_pair_column", "label_column")
    return "data=files " + " ".join(f"data.{k}={data.get(k)}" for k in keys if data.get(k) is not None)


def build_assignment(model: nn.Module, cfg: DictConfig) -> Optional[BitAssignment]:
    """The uniform assignment of ``cfg.quant``; None when nothing is quantized (fp32).

    With ``quant.tws`` it is the ternary (2-bit) assignment the split starts from.
    """
    q = cfg.quant
    if q.weight_bits == 32 and q.act_bits in (None, 32) and q.emb_bits == 32:
        return None
    embeddings = (list(q.embedding_targets) or DEFAULT_EMBEDDING_PATTERNS) if q.emb_bits != 32 else ()
    targets = list(q.targets) or DEFAULT_LINEAR_PATTERNS
    # quant.subgroups per matrix, or one per row for a matrix with fewer rows (tiny test models).
    subgroups = {re.escape(n): min(q.subgroups, model.get_submodule(n).out_features)
                 for n in select_modules(model, targets)}
    emb_subgroups = {}
    for n in (select_modules(model, embeddings, nn.Embedding) if embeddings else ()):
        rows = model.get_submodule(n).num_embeddings
        emb_subgroups[re.escape(n)] = rows if q.emb_subgroups == 0 else min(q.emb_subgroups, rows)
    return uniform_assignment(
        model, targets, 2 if q.tws else q.weight_bits, num_subgroups=subgroups,
        scheme=q.scheme, act_bits=q.act_bits, embedding_patterns=embeddings, embedding_bits=q.emb_bits,
        embedding_num_subgroups=emb_subgroups, meta={"method": q.name},
    )


def check_recipe(cfg: DictConfig, assignment: Optional[BitAssignment] = None) -> Optional[dict[str, Any]]:
    """Fail fast, before any data or model is loaded, on recipe settings that do not fit together.

    Returns the metrics of the ``init_from`` run (None without one).
    """
    q = cfg.quant
    if q.tws and (q.weight_bits != 1 or q.scheme != "twn"):
        raise ValueError("quant.tws=true splits a ternary (twn) student into a binary one: it needs "
                         f"quant.weight_bits=1 and quant.scheme=twn, got {q.weight_bits} and {q.scheme!r}")
    if "mixed" in cfg and assignment is None:  # amqs-qat's schema (the search's retrain has its own budget)
        if cfg.mixed is not None and cfg.budget is None:
            raise ValueError("mixed (per-layer bits, recipe=qbert) needs a size budget: add budget=c13 "
                             "(or c10_8, c16_2; then budget.value=... to change it)")
        if cfg.mixed is None and cfg.budget is not None:
            raise ValueError("budget is only used by a mixed-precision allocation (recipe=qbert); a uniform "
                             "recipe's size follows from quant.weight_bits")
        if cfg.mixed is not None and q.tws:
            raise ValueError("mixed and quant.tws do not combine: TWS splits a uniformly ternary student")
    init_from = cfg.get("init_from")
    if not init_from:
        return None
    path = Path(init_from)
    if not path.is_dir():
        raise FileNotFoundError(f"init_from={init_from!r}: no such run folder; run that stage first "
                                "(amqs-qat writes <results_dir>/runs/<name>; staged recipes run their stages in order)")
    missing = [f for f in (STUDENT_FILE, "metrics.json") if not (path / f).exists()]
    if missing:
        raise FileNotFoundError(f"init_from={init_from!r} is not a finished run: {' and '.join(missing)} missing "
                                "(a run writes them when it ends; rerun it to finish it)")
    return json.loads((path / "metrics.json").read_text())


def _is_quantizer_state(key: str) -> bool:
    return key.endswith((".bits", ".step")) or ".act_quant." in key


@torch.no_grad()
def load_student_init(student: nn.Module, run_folder: str | Path) -> dict[str, list[str]]:
    """Load a finished run's ``student.pt`` into ``student`` (built for this run's assignment).

    Every weight, bias and LayerNorm must match by name and shape (the same model), else ``ValueError``.
    Quantizer state is kept where it still means the same: bit-widths always come from this run; an LSQ
    weight step only where the module's bits are unchanged (else re-initialised from the loaded weights);
    activation EMA ranges always (they do not depend on the bit-width); a learned activation step only at
    the same activation bits. Returns the names of quantizer states re-initialised.

    Example::

        load_student_init(student, "results/runs/sst2-progressive/1-w8")
    """
    folder = Path(run_folder)
    state = torch.load(folder / STUDENT_FILE, map_location="cpu", weights_only=True)
    own = student.state_dict()
    missing = [k for k in own if not _is_quantizer_state(k) and k not in state]
    unexpected = [k for k in state if not _is_quantizer_state(k) and k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
              if k in state and not _is_quantizer_state(k) and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        detail = "; ".join(f"{what}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
                           for what, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
                           if items)
        raise ValueError(f"init_from={str(run_folder)!r}: its student.pt does not fit this student ({detail}); "
                         "it must come from the same model, not from a TWS-split one (twice as wide)")
    student.load_state_dict({k: state[k] for k in own if not _is_quantizer_state(k)}, strict=False)
    prev_act_bits = None
    if (folder / "bits.json").exists():
        prev_act_bits = BitAssignment.from_json(folder / "bits.json").act_bits
    reset: list[str] = []
    for name, m in student.named_modules():
        if isinstance(m, (QuantLinear, QuantEmbedding)) and m.step is not None:
            step, bits = state.get(f"{name}.step"), state.get(f"{name}.bits")
            if step is not None and bits is not None and step.shape == m.step.shape and torch.equal(bits, m.bits.cpu()):
                m.step.copy_(step)
            else:
                m.reset_step()
                reset.append(f"{name}.step")
        elif isinstance(m, ActQuant) and m.enabled:
            prev = {k: state.get(f"{name}.{k}") for k in ("running_min", "running_max", "initialized", "step")}
            if m.lsq and prev["step"] is not None and prev_act_bits == m.bits:
                m.step.copy_(prev["step"])
                m.initialized.copy_(prev["initialized"])
            elif not m.lsq and prev["step"] is None and prev["initialized"] is not None:
                for k in ("running_min", "running_max", "initialized"):
                    getattr(m, k).copy_(prev[k])
            else:
                reset.append(name)
    return {"reinitialised": reset}


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
    """Train and evaluate one fixed assignment; write ``<results_dir>/runs/<name>/``; return its metrics.

    The student starts from the teacher's weights, or from ``student_init`` (an HF id/folder, e.g.
    the pretrained encoder: AQ-BERT's re-initialisation), or from ``cfg.init_from`` (a finished run's
    student.pt: staged recipes); the teacher distils either way. Without ``assignment`` the bits come
    from ``cfg.quant``, per layer from ``cfg.mixed`` (Q-BERT), and ``cfg.quant.tws`` splits the ternary
    student into a binary one (BinaryBERT) before training. ``dev_accuracy_ptq`` is the student's
    accuracy before training (after the split, for TWS: the ternary model's, by equivalence).
    """
    out = run_dir(cfg)
    device = str(resolve_device(cfg.device))
    cfg = pin_precision(pin_teacher(cfg), device)
    prev = check_recipe(cfg, assignment)
    if prev is not None and student_init is not None:
        raise ValueError("init_from and student_init both name the student's start: pass one")
    fp = _run_hash(cfg, assignment, student_init, prev)
    done = prepare_run_dir(out, fp, cfg.overwrite)
    if done is not None:
        log.info("reusing the finished run in %s", out)
        return done
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed)
    task = task_spec(cfg.data)
    splits = load_glue(cfg.data)
    teacher, tokenizer = load_teacher(cfg, task.num_labels)
    loaders = _Loaders(cfg, splits, tokenizer)
    student, assignment, replaced = build_student(cfg, teacher, assignment, student_init, loaders, out)
    if assignment is not None:
        assignment.to_json(out / "bits.json")
    teacher.to(device)
    student.to(device)
    scores, result = _train_and_evaluate(cfg, student, teacher, loaders, task.metrics, out, device)
    torch.save(student.state_dict(), out / STUDENT_FILE)
    save_config(cfg, out / "config.yaml")
    metrics = {"task": task.name, "model": cfg.model.name, "method": cfg.quant.name, "teacher": cfg.teacher.source,
               "student_init": student_init, "init_from": cfg.get("init_from"),
               **_bits_metrics(cfg, assignment, replaced), **_size_metrics(cfg, student, teacher), **scores,
               "train_examples": result.train_examples, "epochs": cfg.train.epochs, "steps": result.steps,
               "seconds": round(result.seconds, 1), "final_loss": result.final_loss, "threads": torch.get_num_threads(),
               "config_hash": fp, "git_revision": git_revision(), "command": command,
               "run": relative_run(out, cfg.paths.results_dir), "provenance": provenance(device, torch.get_num_threads(), cfg.train.precision),
               "data_fingerprint": data_fingerprint(splits, task.name)}
    write_json(out / "metrics.json", metrics)
    shutil.rmtree(out / "checkpoint")
    log.info("%s: dev %.4f (PTQ %.4f), encoder %d B (%.2fx)", cfg.name, metrics["dev_accuracy"],
             metrics["dev_accuracy_ptq"], metrics["encoder_bytes"], metrics["compression"])
    return metrics


def _run_hash(cfg: DictConfig, assignment: Optional[BitAssignment], student_init: Optional[str],
              prev: Optional[dict[str, Any]]) -> str:
    """What the run computes: its config, plus a given assignment's bits and start, plus a previous stage's hash."""
    fp = config_hash(cfg)
    if assignment is not None:
        fp += "-" + fingerprint({"bits": assignment.to_dict(), "init": student_init})
    if prev is not None:  # a retrained previous stage makes this one stale
        fp += "-" + fingerprint({"init_from": prev.get("config_hash")})
    return fp


class _Loaders:
    """Makes the run's loader of a split (train: shuffled and resumable; others: in order)."""

    def __init__(self, cfg: DictConfig, splits, tokenizer) -> None:
        self.cfg, self.splits, self.tokenizer = cfg, splits, tokenizer

    def __call__(self, split: str, train: bool = False):
        c = self.cfg
        return make_loader(self.splits[split], self.tokenizer, max_length=c.data.max_length,
                           batch_size=c.train.batch_size if train else c.train.eval_batch_size, shuffle=train,
                           seed=c.train.seed, progress=c.train.progress)


def build_student(cfg: DictConfig, teacher: nn.Module, assignment: Optional[BitAssignment],
                  student_init: Optional[str], loaders: _Loaders, out: Path
                  ) -> tuple[nn.Module, Optional[BitAssignment], list[str]]:
    """The fake-quantized student of the run, its final assignment and the names of the quantized modules.

    Bits: the given assignment, else ``cfg.quant``'s uniform ones (per layer with ``cfg.mixed``); weights:
    the teacher's, ``student_init``'s or ``cfg.init_from``'s; with ``quant.tws`` split into a binary model.
    """
    if assignment is None:
        assignment = build_assignment(teacher, cfg)
        if cfg.get("mixed") is not None:
            assignment = _mixed(cfg, teacher, assignment, loaders("train", True), out)
    elif cfg.get("assignment"):
        check_covers(assignment, teacher, cfg)
    base = teacher
    if student_init is not None:
        # cfg.model's geometry too: a "random" source builds the model from it (the tiny test model)
        model_cfg = ModelConfig(**{**OmegaConf.to_container(cfg.model, resolve=True), "source": student_init})
        base, _ = load_classifier(model_cfg, teacher.config.num_labels)
    student, replaced = quantize_student(base, assignment, cfg)
    if cfg.get("init_from"):
        init = load_student_init(student, cfg.init_from)
        log.info("student from %s (re-initialised quantizer state: %s)", cfg.init_from, init["reinitialised"])
    if cfg.quant.tws:
        split = split_ternary_linears(student)
        log.info("TWS: split %d ternary Linears into binary ones of twice the width", len(split))
        assignment = extract_assignment(student, meta={**assignment.meta, "tws": split})
    log.info("quantized %d modules (%s): %s", len(replaced), cfg.quant.name, ", ".join(replaced))
    return student, assignment, replaced


def check_covers(assignment: BitAssignment, model: nn.Module, cfg: DictConfig) -> None:
    """A given bits file must name every Linear the recipe quantizes: a module it forgets would silently stay fp32."""
    targets = list(cfg.quant.targets) or DEFAULT_LINEAR_PATTERNS
    missing = [n for n in select_modules(model, targets) if n not in assignment.modules]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ValueError(f"assignment={cfg.assignment} has no bits for {', '.join(missing[:3])}{more}: every "
                         "quantized Linear needs an entry (give a module 32 bits to keep it fp32 on purpose)")


def _train_and_evaluate(cfg: DictConfig, student: nn.Module, teacher: nn.Module, loaders: _Loaders,
                        metrics: tuple[str, ...], out: Path, device: str) -> tuple[dict[str, Any], Any]:
    """PTQ accuracy on dev, QAT with distillation (resumable), then dev and search-val metrics; writes the dev
    predictions (:data:`PREDICTIONS_FILE`) before the run's metrics.json."""
    dev_loader = loaders("dev")
    start = start_student(cfg, student, teacher, loaders, metrics, out, device)
    d = cfg.distill
    loss_fn = DistillLoss(teacher if (d.kd_weight or d.hidden_weight) else None, d)
    result = fit(student, loaders("train", True), cfg.train, loss_fn=loss_fn, ckpt_dir=out / "checkpoint",
                 log_file=out / "train_log.jsonl", device=device, desc=f"qat {cfg.name}")
    dev, predictions = evaluate_with_predictions(student, dev_loader, metrics, device=device, split="dev")
    write_json(out / PREDICTIONS_FILE, predictions)
    search_val = evaluate(student, loaders("search_val"), metrics, device=device) if cfg.eval_search_val else {}
    return {"dev_accuracy": dev["accuracy"], "dev_f1": dev.get("f1"), "dev_macro_f1": dev.get("macro_f1"), **start,
            "search_val_accuracy": search_val.get("accuracy"), "search_val_f1": search_val.get("f1")}, result


START_FILE = "start.json"  # in the run's checkpoint folder: the start's accuracies, for a resumed run


def start_student(cfg: DictConfig, student: nn.Module, teacher: nn.Module, loaders: _Loaders,
                  metrics: tuple[str, ...], out: Path, device: str) -> dict[str, Any]:
    """The student's start (``train.init``) and its accuracy before QAT (``*_ptq``: dev, and search-val).

    ``rtn`` keeps the round-to-nearest student; ``lkd`` fits it to the teacher block by block
    (:mod:`amqs.train.reconstruct`) on the first ``train.reconstruct.batches`` batches of the train loader.
    A resumed run (its checkpoint holds the trained student) reads the start's numbers back instead.
    """
    ckpt = out / "checkpoint"
    if (ckpt / STATE_FILE).exists() and (ckpt / START_FILE).exists():
        log.info("resuming: the start's accuracies from %s", ckpt / START_FILE)
        return json.loads((ckpt / START_FILE).read_text())
    init = check_init(cfg.train.init)
    stats: dict[str, Any] = {"init": init}
    if init == "lkd":
        fitted = lkd_start(cfg, student, teacher, loaders("train", True), device)
        write_json(out / "reconstruct.json", fitted)
        stats["init_seconds"] = fitted["seconds"]
    # Post-training quantization accuracy (activation ranges: calibrated by lkd, else each batch's own).
    stats["dev_accuracy_ptq"] = evaluate(student, loaders("dev"), metrics, device=device)["accuracy"]
    if cfg.eval_search_val:
        stats["search_val_accuracy_ptq"] = evaluate(student, loaders("search_val"), metrics, device=device)["accuracy"]
    ckpt.mkdir(parents=True, exist_ok=True)
    write_json(ckpt / START_FILE, stats)
    return stats


def lkd_start(cfg: DictConfig, model: nn.Module, teacher: nn.Module, loader: Any, device: str | torch.device,
              exclude: Any = ()) -> dict[str, Any]:
    """``train.init=lkd``: fit ``model`` to ``teacher`` block by block (``train.reconstruct``) on the first
    batches of ``loader``, under ``train.precision``; ``exclude``: parameters left alone. Returns the fit's stats."""
    rc = ReconstructConfig(**OmegaConf.to_container(cfg.train.reconstruct, resolve=True))
    return reconstruct(model, teacher.to(device), calibration_batches(loader, rc.batches, device), rc,
                       cfg.train.precision, exclude=exclude)


def check_init(init: str) -> str:
    """``train.init``, validated (one of :data:`amqs.train.reconstruct.INITS`)."""
    if init not in INITS:
        raise ValueError(f"train.init={init!r}: use one of {', '.join(INITS)}")
    return init


def _bits_metrics(cfg: DictConfig, assignment: Optional[BitAssignment], replaced: list[str]) -> dict[str, Any]:
    q = cfg.quant
    return {"weight_bits": _weight_bits(assignment, q.weight_bits),
            "act_bits": assignment.act_bits if assignment is not None else q.act_bits,
            "emb_bits": _emb_bits(assignment, q.emb_bits),
            "scheme": assignment.scheme if assignment is not None else q.scheme, "replaced_modules": replaced,
            **({"unit_bits": dict(assignment.meta["unit_bits"])} if assignment and "unit_bits" in assignment.meta
               else {})}


def _size_metrics(cfg: DictConfig, student: nn.Module, teacher: nn.Module) -> dict[str, Any]:
    size = model_size(student)
    # The fp32 reference is the teacher's architecture: a TWS-split student's matrices are twice as wide.
    fp32 = model_size(teacher) if cfg.quant.tws else size
    return {"encoder_bytes": size.encoder_bytes, "total_bytes": size.total_bytes,
            "fp32_encoder_bytes": fp32.fp32_encoder_bytes, "fp32_total_bytes": fp32.fp32_total_bytes,
            "compression": round(fp32.fp32_encoder_bytes / size.encoder_bytes, 3),
            "total_compression": round(fp32.fp32_total_bytes / size.total_bytes, 3)}


def _weight_bits(assignment: Optional[BitAssignment], configured: int) -> float | int:
    """The encoder Linears' bits: the common value of a uniform assignment, else their average per weight."""
    if assignment is None:
        return configured
    return _common_bits([m for n, m in assignment.modules.items()
                         if m.kind == "linear" and under_prefix(n, ENCODER_PREFIX)], configured)


def _emb_bits(assignment: Optional[BitAssignment], configured: int) -> float | int:
    """The embedding tables' bits: their common value, else the average per weight; 32 when none is quantized."""
    if assignment is None:
        return configured
    return _common_bits([m for m in assignment.modules.values() if m.kind == "embedding"], 32)


def _common_bits(modules: list, none: int) -> float | int:
    """The modules' common bit-width, else their average bits per weight; ``none`` without modules."""
    bits = {b for m in modules for b in m.bits}
    if not bits:
        return none
    if len(bits) == 1:
        return bits.pop()
    return round(sum(m.weight_bits for m in modules) / sum(m.num_weights for m in modules), 3)


def _mixed(cfg: DictConfig, teacher: nn.Module, assignment: BitAssignment, train_loader, out: Path) -> BitAssignment:
    """Q-BERT's per-layer bits (amqs.train.sensitivity); a resumed run keeps the bits it started with."""
    from amqs.quant.budget import Budget
    from amqs.train.sensitivity import mixed_assignment

    if (out / "checkpoint" / STATE_FILE).exists() and (out / "bits.json").exists():
        return BitAssignment.from_json(out / "bits.json")
    device = next(teacher.parameters()).device
    batches = []
    for batch in train_loader:
        if len(batches) == cfg.mixed.batches:
            break
        batches.append({k: v.to(device) for k, v in batch.items()})
    budget = Budget(cfg.budget.kind, float(cfg.budget.value))
    mixed = mixed_assignment(teacher, assignment, batches, cfg.mixed, budget)
    log.info("%s sensitivity per unit: %s -> bits %s (%d encoder bytes, target %.0f)", cfg.mixed.sensitivity,
             mixed.meta["sensitivity"]["per_unit"], mixed.meta["unit_bits"], mixed.meta["encoder_bytes"],
             mixed.meta["target_bytes"])
    return mixed
