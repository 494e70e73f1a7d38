"""The study's ``latency_ms`` objective: each trial's retrained model exported and timed on ONNX Runtime.

A trial's model is exported as ``amqs-export`` exports it (pruned heads and FFN neurons removed, the int8 path)
into ``<trial run>/export`` and timed at ``outer.latency``'s shape (batch x length, threads), interleaved with
a reference measured in the same seconds: ORT's uniform int8 recipe of the study's teacher
(``onnxruntime.quantization.quantize_dynamic``, as ``amqs-bench`` builds it), exported once per study into
``<study>/latency-reference``. The trial records its median ``latency_ms`` (the objective) and
``latency_vs_int8`` (its median over the reference's: below 1 is faster), the ratio being the number to compare
across trials on a noisy machine.

Example::

    reference = reference_int8(study_dir, base_cfg)          # once per study (reused when present)
    facts = trial_latency(run_dir, reference, cfg.outer.latency)
    facts["latency_ms"], facts["latency_vs_int8"]
"""

from __future__ import annotations

import os
import shutil
import statistics
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

REFERENCE_DIR = "latency-reference"


def reference_int8(study: Path, base: DictConfig) -> Path:
    """The study's reference export (ORT uniform int8 of the teacher), built once; its folder.

    Built in a private folder and renamed into place, so workers that start together never read half of it.
    """
    from amqs.bench import quantize_int8_dynamic
    from amqs.data.glue import task_spec
    from amqs.export.app import export_model
    from amqs.train.qat import load_teacher

    out = study / REFERENCE_DIR / "int8"
    if (out / "model.onnx").exists():
        return out
    tmp = study / f"{REFERENCE_DIR}.tmp{os.getpid()}"
    teacher, tokenizer = load_teacher(base, task_spec(base.data).num_labels)
    export_model(teacher.eval(), tokenizer, tmp / "fp32", task=base.data.task, max_length=int(base.data.max_length),
                 meta={"source_run": str(base.teacher.source)})
    quantize_int8_dynamic(tmp / "fp32", tmp / "int8")
    try:
        os.replace(tmp, study / REFERENCE_DIR)
    except OSError:  # another worker was first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def trial_latency(run_dir: Path, reference: Path, lat: DictConfig | Any) -> dict[str, float]:
    """Export ``run_dir``'s model into ``run_dir/export`` and time it against ``reference``.

    Returns ``latency_ms`` and ``reference_latency_ms`` (medians of ``lat.rounds`` interleaved calls after
    ``lat.warmup``) and ``latency_vs_int8`` (their ratio).
    """
    from amqs.bench import time_exports
    from amqs.export.app import export_run

    export_run(run_dir, run_dir / "export", evaluate=False, results_dir=None, threads=int(lat.threads))
    times = time_exports({"trial": run_dir / "export", "reference": reference}, batch=int(lat.batch),
                         length=int(lat.length), threads=int(lat.threads), warmup=int(lat.warmup),
                         rounds=int(lat.rounds))
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    return {"latency_ms": round(ms["trial"], 4), "reference_latency_ms": round(ms["reference"], 4),
            "latency_vs_int8": round(ms["trial"] / ms["reference"], 4)}


__all__ = ["REFERENCE_DIR", "reference_int8", "trial_latency"]
