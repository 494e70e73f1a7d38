"""``amqs-export RUN_DIR --out DIR``: a trained run (amqs-search / amqs-qat) as a deployable ONNX model.

RUN_DIR is a run folder (``results/runs/<name>``; for a search run its ``retrain/`` is used) holding
``student.pt``, ``config.yaml`` and, for a quantized model, ``bits.json``. DIR receives
``model.onnx``, ``export.json``, the HF ``config.json`` (of the exported shapes: see :func:`exported_config`) and
tokenizer, ``bits.json`` and ``metrics.json``
(the run's metrics plus the export's: file and accounted bytes, removed neurons/heads, and with
``--eval`` the dev accuracy of the fake-quantized PyTorch model and of the exported model and their
largest logit difference). With ``--eval`` a row is also written to ``<results>/exports.csv``.

A trial of an Optuna study: ``amqs-export STUDY_DIR --trial N [--storage URL] --out DIR`` exports
``STUDY_DIR/runs/trial_<n>``, first downloading what that folder lacks from the study's artifact store (a study
run with ``outer.artifacts=... outer.artifacts_model=true``; amqs.outer.artifacts), so a machine with only the
storage URL can export it. The student is rebuilt on the teacher the study pinned, which must be readable there.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import onnx
from onnx import numpy_helper
import torch

from amqs.export.graph import build_model
from amqs.export.materialize import BertArrays, materialize
from amqs.models.family import family_named, under_prefix
from amqs.quant import BitAssignment, model_size, pruned_fraction
from amqs.quant.size import ENCODER_PREFIX
from amqs.runtime import EXPORT_FILE, FORMAT, FORMAT_VERSION, MODEL_FILE, ExportedModel
from amqs.utils.cli import user_errors
from amqs.utils.run import check_results_dir, git_revision, upsert_csv, write_json
from amqs.utils.runconfig import load_run_config

log = logging.getLogger("amqs.export")

EXPORT_COLUMNS = ("task", "source", "export", "compression", "pruned_fraction", "file_bytes", "accounted_bytes",
                  "encoder_stored_bytes", "encoder_accounted_bytes", "dev_accuracy_fakequant", "dev_accuracy_exported",
                  "max_logit_diff", "median_logit_diff", "prediction_agreement", "removed_ffn_fraction",
                  "removed_heads", "command")


def resolve_run(run_dir: Path) -> Path:
    """The folder with the trained student: ``RUN_DIR/retrain`` for a search run, else RUN_DIR."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    for candidate in (run_dir / "retrain", run_dir):
        if (candidate / "student.pt").is_file():
            for need in ("config.yaml", "metrics.json"):
                if not (candidate / need).is_file():
                    raise FileNotFoundError(f"{candidate / need} missing: the run did not finish")
            return candidate
    raise FileNotFoundError(f"{run_dir}: no student.pt (in it or in retrain/): the run has not finished training, "
                            "or its weights were deleted (student.pt is not kept in git; rerun the command in "
                            "its metrics.json)")


def load_run(run_dir: Path) -> tuple[torch.nn.Module, Any, Any, Optional[BitAssignment], dict]:
    """``(student, tokenizer, cfg, assignment, metrics)`` of a finished run, weights loaded."""
    from amqs.data.glue import task_spec
    from amqs.train.qat import STUDENT_FILE, load_teacher, quantize_student

    d = resolve_run(run_dir)
    cfg = load_run_config(d)
    metrics = json.loads((d / "metrics.json").read_text())
    task = task_spec(cfg.data)
    teacher, tokenizer = load_teacher(cfg, task.num_labels)
    assignment = BitAssignment.from_json(d / "bits.json") if (d / "bits.json").is_file() else None
    student, _ = quantize_student(teacher, assignment, cfg)
    state = torch.load(d / STUDENT_FILE, map_location="cpu", weights_only=True)
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"{d / STUDENT_FILE} does not match the model of {d / 'config.yaml'}: missing {missing[:5]}, "
                         f"unexpected {list(unexpected)[:5]}")
    return student.eval(), tokenizer, cfg, assignment, metrics


def initializer_bytes(model: onnx.ModelProto, prefix: str) -> int:
    """Bytes of the stored tensors whose name starts with ``prefix`` (e.g. the encoder's: BERT-spelled, so
    ``bert.encoder.`` also counts ``roberta.encoder.`` and ``distilbert.transformer.``)."""
    return sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer if under_prefix(t.name, prefix))


def label_names(config: Any, task: str) -> dict[int, str]:
    """The model's ``id2label`` (a model fine-tuned on your files has the file's labels), or a GLUE task's label
    names where the model has only HF's ``LABEL_<i>``.

    Example:
        >>> from transformers import BertConfig
        >>> label_names(BertConfig(), "sst2"), label_names(BertConfig(id2label={0: "no", 1: "yes"}), "sst2")
        ({0: 'negative', 1: 'positive'}, {0: 'no', 1: 'yes'})
    """
    from amqs.data.glue import TASKS

    names = {int(i): str(n) for i, n in config.id2label.items()}
    task_names = TASKS[task].label_names if task in TASKS else ()
    if names == {i: f"LABEL_{i}" for i in range(len(names))} and len(task_names) == len(names):
        return dict(enumerate(task_names))
    return names


def exported_config(config: Any, arrays: BertArrays, task: str) -> dict[str, Any]:
    """The HF ``config.json`` of an export: the model's config, describing the graph the export holds.

    Removed heads are HF's ``pruned_heads`` (``{layer: [original head ids]}``, which ``BertConfig`` reads and
    prunes by); what HF cannot say (per-layer FFN widths) is under ``amqs``: per layer the heads and the
    intermediate size the graph computes with. ``id2label``/``label2id`` are always written (:func:`label_names`),
    and the family: ``model_type`` and ``architectures`` (the HF class the weights came from).

    Example::

        cfg = exported_config(student.config, materialize(student), "sst2")  # head 1, 32 neurons of layer 0 gone
        cfg["pruned_heads"]  # {"0": [1]}
        cfg["amqs"]  # {"num_attention_heads": [3, 4], "attention_head_size": 16, "intermediate_size": [96, 128]}
        cfg["id2label"]  # {"0": "negative", "1": "positive"}
    """
    config = copy.deepcopy(config)
    config.architectures = [family_named(arrays.model_type).classifier_class]
    labels = label_names(config, task)
    config.id2label, config.label2id = labels, {n: i for i, n in labels.items()}
    config.pruned_heads = {i: ly.removed_heads for i, ly in enumerate(arrays.layers) if ly.removed_heads}
    config.amqs = {"num_attention_heads": [ly.num_heads for ly in arrays.layers],
                   "attention_head_size": arrays.layers[0].head_dim,
                   "intermediate_size": [ly.inter.shape[0] for ly in arrays.layers]}
    out = json.loads(config.to_json_string())  # what save_pretrained writes: the keys that differ from defaults
    return {**out, "id2label": {str(i): n for i, n in labels.items()}, "label2id": config.label2id}


def export_model(student: torch.nn.Module, tokenizer, out: Path, *, task: str, max_length: int,
                 remove_pruned: bool = True, meta: Optional[dict] = None) -> dict[str, Any]:
    """Write ``out/`` (model.onnx, export.json, config, tokenizer); return the export facts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = materialize(student, remove_pruned=remove_pruned)
    model = build_model(arrays, doc=f"amqs export of a {task} classifier")
    tmp = out / (MODEL_FILE + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(out / MODEL_FILE)
    write_json(out / "config.json", exported_config(student.config, arrays, task))
    tokenizer.save_pretrained(out)
    inter = sum(ly.inter.shape[0] + ly.removed_neurons for ly in arrays.layers)
    size = model_size(student)
    integer = sum(m.quantized and m.act is not None for m in arrays.matrices())
    facts = {
        "format": FORMAT, "version": FORMAT_VERSION, "task": task, "num_labels": arrays.classifier.shape[0],
        "max_length": max_length, "file_bytes": (out / MODEL_FILE).stat().st_size,
        "accounted_bytes": size.total_bytes,
        # the encoder's stored tensors (packed codes, scales, zero points, biases, LayerNorms)
        "encoder_stored_bytes": initializer_bytes(model, ENCODER_PREFIX), "encoder_accounted_bytes": size.encoder_bytes,
        "removed_ffn_neurons": sum(ly.removed_neurons for ly in arrays.layers),
        "removed_ffn_fraction": sum(ly.removed_neurons for ly in arrays.layers) / inter if inter else 0.0,
        "removed_heads": {str(i): ly.removed_heads for i, ly in enumerate(arrays.layers) if ly.removed_heads},
        "integer_matrices": integer,
        "onnxruntime_ops": ("QuantizeLinear + com.microsoft.MatMulIntegerToFloat (u8 x s8)" if integer
                            else "MatMul (fp32)"),
        **(meta or {}),
    }
    write_json(out / EXPORT_FILE, facts)
    return facts


def dev_loader(cfg, tokenizer) -> Any:
    """The run's dev split, batched as every parity check reads it."""
    from amqs.data.glue import load_glue
    from amqs.data.loaders import make_loader

    dev = load_glue(cfg.data)["dev"]
    return make_loader(dev, tokenizer, max_length=int(cfg.data.max_length), batch_size=64, shuffle=False,
                       progress=cfg.train.progress)


def parity(reference: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, metrics: Sequence[str],
           suffix: str) -> dict[str, Any]:
    """Dev metrics of the fake-quantized student (``reference``) and of another model's ``logits`` on the same
    examples (``dev_<metric>_fakequant``, ``dev_<metric>_<suffix>``), their largest and median logit difference and
    the share of equal predictions."""
    from amqs.train.metrics import METRICS

    diff = (logits - reference).abs().amax(dim=-1)  # per example
    out: dict[str, Any] = {"dev_examples": len(labels), "max_logit_diff": float(diff.max()),
                           "median_logit_diff": float(diff.median())}
    for name in metrics:
        out[f"dev_{name}_fakequant"] = METRICS[name](reference.argmax(-1), labels)
        out[f"dev_{name}_{suffix}"] = METRICS[name](logits.argmax(-1), labels)
    out["prediction_agreement"] = float((logits.argmax(-1) == reference.argmax(-1)).float().mean())
    return out


def compare_on_dev(student: torch.nn.Module, exported: ExportedModel, cfg, threads: Optional[int]) -> dict[str, Any]:
    """Dev metrics of the fake-quantized PyTorch model and of the exported one, same batches."""
    from amqs.train.metrics import predict

    if threads:
        torch.set_num_threads(threads)
    loader = dev_loader(cfg, exported.tokenizer)
    torch_logits, labels = predict(student, loader)
    ort_logits = torch.from_numpy(exported.predict_loader(loader))  # the same batches, tokenized once
    return parity(torch_logits, ort_logits, labels, exported.task.metrics, "exported")


def compare_hf_on_dev(student: torch.nn.Module, folder: Path, cfg, tokenizer) -> dict[str, Any]:
    """Dev metrics of the fake-quantized student and of the HF folder loaded back with
    ``AutoModelForSequenceClassification`` (which proves it loads), same batches."""
    from transformers import AutoModelForSequenceClassification

    from amqs.data.glue import task_spec
    from amqs.train.metrics import predict

    loader = dev_loader(cfg, tokenizer)
    torch_logits, labels = predict(student, loader)
    hf_logits, _ = predict(AutoModelForSequenceClassification.from_pretrained(folder).eval(), loader)
    return parity(torch_logits, hf_logits, labels, task_spec(cfg.data).metrics, "hf")


FORMATS = ("onnx", "hf", "both")


def export_run(run_dir: Path, out: Path, *, evaluate: bool = True, remove_pruned: bool = True,
               threads: Optional[int] = None, results_dir: Optional[Path] = Path("outputs"),
               command: str = "", fmt: str = "onnx") -> dict[str, Any]:
    """Export a finished run: ``fmt`` ``onnx`` (the deployable model, into ``out``), ``hf`` (the dequantized
    student as a ``save_pretrained`` folder, :mod:`amqs.export.hf`, into ``out``) or ``both`` (HF into ``out/hf``)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    t0 = time.time()
    student, tokenizer, cfg, assignment, run_metrics = load_run(run_dir)
    if evaluate and results_dir is not None:  # before any work: a debug run's row never lands in results/
        check_results_dir(results_dir, smoke=bool(cfg.get("smoke")), model_source=cfg.model.source)
    meta = {"source_run": str(run_dir), "compression": run_metrics.get("compression"),
            "pruned_fraction": 0.0 if assignment is None else pruned_fraction(assignment),
            "git_revision": git_revision(), "command": command}
    result: dict[str, Any] = {}
    if fmt != "hf":
        result = _export_onnx(student, tokenizer, cfg, run_dir, Path(out), meta, evaluate=evaluate,
                              remove_pruned=remove_pruned, threads=threads, results_dir=results_dir)
    if fmt != "onnx":
        hf = _export_hf(student, tokenizer, cfg, run_dir, Path(out) / "hf" if fmt == "both" else Path(out), meta,
                        evaluate=evaluate)
        result = result or hf
    write_json(Path(out) / "metrics.json", {"run": run_metrics, **_read_json(Path(out) / "metrics.json"),
                                             "seconds": round(time.time() - t0, 1)})
    return result


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _export_hf(student, tokenizer, cfg, run_dir: Path, out: Path, meta: dict, *, evaluate: bool) -> dict[str, Any]:
    """The HF folder of the student, with its dev parity against the fake-quantized student."""
    from amqs.export.hf import save_hf

    bits = resolve_run(run_dir) / "bits.json"
    facts = save_hf(student, tokenizer, out, labels=label_names(student.config, cfg.data.task),
                    bits_file=bits if bits.is_file() else None, meta=meta)
    parity_hf = compare_hf_on_dev(student, out, cfg, tokenizer) if evaluate else {}
    if parity_hf:
        log.info("dev parity of the HF folder: %s", parity_hf)
    write_json(out / "metrics.json", {"export_hf": facts, "parity_hf": parity_hf})
    return {**facts, **parity_hf}


def _export_onnx(student, tokenizer, cfg, run_dir: Path, out: Path, meta: dict, *, evaluate: bool,
                 remove_pruned: bool, threads: Optional[int], results_dir: Optional[Path]) -> dict[str, Any]:
    """The ONNX export, its dev parity and (measured runs) its row of ``<results>/exports.csv``."""
    src = resolve_run(run_dir)
    facts = export_model(student, tokenizer, out, task=cfg.data.task, max_length=int(cfg.data.max_length),
                         remove_pruned=remove_pruned, meta=meta)
    if (src / "bits.json").is_file():
        shutil.copyfile(src / "bits.json", out / "bits.json")
    log.info("wrote %s: %d bytes on disk, %d accounted", out / MODEL_FILE, facts["file_bytes"],
             facts["accounted_bytes"])
    parity: dict[str, Any] = {}
    if evaluate:
        parity = compare_on_dev(student, ExportedModel(out, threads=threads), cfg, threads)
        log.info("dev parity: %s", parity)
    write_json(out / "metrics.json", {"export": facts, "parity": parity})
    if evaluate and results_dir is not None:
        _export_row(cfg, run_dir, out, facts, parity, results_dir, meta["command"])
    return {**facts, **parity}


def _export_row(cfg, run_dir: Path, out: Path, facts: dict, parity: dict, results_dir: Path, command: str) -> None:
    row = {"task": cfg.data.task, "source": str(run_dir), "export": str(out), "compression": facts.get("compression"),
           "pruned_fraction": round(facts["pruned_fraction"], 4), "file_bytes": facts["file_bytes"],
           "accounted_bytes": facts["accounted_bytes"], "encoder_stored_bytes": facts["encoder_stored_bytes"],
           "encoder_accounted_bytes": facts["encoder_accounted_bytes"],
           "dev_accuracy_fakequant": parity["dev_accuracy_fakequant"],
           "dev_accuracy_exported": parity["dev_accuracy_exported"], "max_logit_diff": parity["max_logit_diff"],
           "median_logit_diff": parity["median_logit_diff"], "prediction_agreement": parity["prediction_agreement"],
           "removed_ffn_fraction": round(facts["removed_ffn_fraction"], 4),
           "removed_heads": sum(len(v) for v in facts["removed_heads"].values()), "command": command}
    upsert_csv(Path(results_dir) / "exports.csv", row, key=("source", "export"), columns=EXPORT_COLUMNS)


EXPORT_NEEDS = ("retrain/student.pt", "retrain/config.yaml", "retrain/metrics.json", "retrain/bits.json")


def trial_run(study_dir: Path, trial: int, storage: Optional[str] = None, study: Optional[str] = None,
              artifacts: Optional[str] = None) -> Path:
    """The run folder of trial ``trial`` of the study in ``study_dir`` (or at ``storage``), with the files an
    export needs downloaded from the study's artifact store where the folder lacks them."""
    from amqs.outer.artifacts import fetch_trial, study_store
    from amqs.outer.storage import load_study

    s = load_study(study_dir, storage, study)
    return fetch_trial(s, trial, study_dir, study_store(s, artifacts), files=EXPORT_NEEDS)


def parser() -> argparse.ArgumentParser:
    """amqs-export's command line (also parses recorded commands in tests)."""
    p = argparse.ArgumentParser(prog="amqs-export", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a finished amqs-search / amqs-qat run folder (with --trial: the "
                                              "study folder, results/studies/<name>)")
    p.add_argument("--out", type=Path, required=True, help="the export folder to write")
    p.add_argument("--no-eval", action="store_true", help="skip the dev-set parity check")
    p.add_argument("--keep-pruned", action="store_true",
                   help="store pruned neurons/heads as zero rows instead of removing them")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the parity check")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="onnx",
                   help="onnx: the deployable model (default); hf: the dequantized student as a save_pretrained "
                        "folder that AutoModelForSequenceClassification loads; both: ONNX in --out, HF in --out/hf")
    p.add_argument("--trial", type=int, default=None, help="export this trial of the study in RUN_DIR")
    p.add_argument("--storage", default=None, help="with --trial: the study's storage URL (default RUN_DIR/study.db)")
    p.add_argument("--study", default=None, help="with --trial: the study's name (default: from study.json)")
    p.add_argument("--artifacts", default=None, help="with --trial: the artifact store as this machine sees it "
                                                     "(default: the one the study recorded)")
    p.add_argument("--results", type=Path, default=Path("outputs"),
                   help="folder of the exports.csv row (default outputs/; the measured table: --results results)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    command = "amqs-export " + " ".join(sys.argv[1:] if argv is None else argv)
    with user_errors("amqs-export"):
        run_dir = args.run_dir
        if args.trial is not None:
            run_dir = trial_run(args.run_dir, args.trial, args.storage, args.study, args.artifacts)
        r = export_run(run_dir, args.out, evaluate=not args.no_eval, remove_pruned=not args.keep_pruned,
                       threads=args.threads, results_dir=args.results, command=command, fmt=args.fmt)
    print({k: r[k] for k in ("file_bytes", "accounted_bytes", "removed_ffn_fraction") if k in r}
          | {k: v for k, v in r.items() if k.startswith("dev_") or k == "max_logit_diff"})


if __name__ == "__main__":
    main()
