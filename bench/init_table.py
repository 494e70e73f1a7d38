"""Builds results/init.{csv,md} from the runs of bench/init.sh: each assignment's start and its accuracy after QAT.

    python bench/init_table.py [--results results]

One row per run folder ``<results>/runs/sst2-<assignment>-bf16[-lkd]``: the start (``init``), its accuracy before
QAT on dev and on search-val, the dev accuracy after the standard QAT budget, the reconstruction's and QAT's
seconds (1 thread) and what defines the run (config hash, command).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from amqs.data import load_glue, task_spec
from amqs.quant import BitAssignment
from amqs.report.tables import render_csv
from amqs.train.metrics import evaluate
from amqs.train.qat import _Loaders, load_teacher, quantize_student
from amqs.utils.runconfig import read_run_config

ASSIGNMENTS = ("w4a8", "w2a8", "ternarybert", "ternary-c16.2")
COLUMNS = ("assignment", "init", "compression", "dev_accuracy_ptq", "search_val_accuracy_ptq", "dev_accuracy_after_qat",
           "seconds", "init_seconds", "qat_seconds", "threads", "cpu", "run", "config_hash", "command")


def rtn_start(run: Path) -> dict[str, float]:
    """A finished rtn run's start rebuilt from its saved config and bits.json (round-to-nearest from the teacher is
    deterministic): its accuracy before QAT on dev and search-val. For runs recorded before QAT runs measured
    the start on search-val; the dev number must equal the recorded ``dev_accuracy_ptq``."""
    cfg = read_run_config(run).cfg
    teacher, tokenizer = load_teacher(cfg, task_spec(cfg.data).num_labels)
    loaders = _Loaders(cfg, load_glue(cfg.data), tokenizer)
    student, _ = quantize_student(teacher, BitAssignment.from_json(run / "bits.json"), cfg)
    return {split: evaluate(student, loaders(split), ("accuracy",))["accuracy"] for split in ("dev", "search_val")}


def with_start(metrics: dict, run: Path) -> dict:
    """``metrics`` with ``search_val_accuracy_ptq``, rebuilt by :func:`rtn_start` where the run lacks it."""
    if metrics.get("search_val_accuracy_ptq") is not None:
        return metrics
    if metrics.get("init", "rtn") != "rtn":
        raise ValueError(f"{run}: an lkd run without search_val_accuracy_ptq")
    start = rtn_start(run)
    if start["dev"] != metrics["dev_accuracy_ptq"]:
        raise ValueError(f"{run}: the rebuilt start scores {start['dev']} on dev, the run recorded "
                         f"{metrics['dev_accuracy_ptq']}: not the same start")
    return {**metrics, "search_val_accuracy_ptq": start["search_val"], "start_rebuilt": True}


def row(assignment: str, metrics: dict) -> dict:
    init_s = metrics.get("init_seconds") or 0.0
    return {"assignment": assignment, "init": metrics.get("init", "rtn"), "compression": metrics["compression"],
            "dev_accuracy_ptq": metrics["dev_accuracy_ptq"], "search_val_accuracy_ptq": metrics.get("search_val_accuracy_ptq"),
            "dev_accuracy_after_qat": metrics["dev_accuracy"], "seconds": round(init_s + metrics["seconds"], 1),
            "init_seconds": init_s, "qat_seconds": metrics["seconds"], "threads": metrics["threads"],
            "cpu": metrics["provenance"]["cpu"], "run": metrics["run"], "config_hash": metrics["config_hash"],
            "command": metrics["command"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=Path("results"))
    args = p.parse_args()
    rows, missing = [], []
    for a in ASSIGNMENTS:
        for suffix in ("", "-lkd"):
            path = args.results / "runs" / f"sst2-{a}-bf16{suffix}" / "metrics.json"
            if path.exists():
                rows.append(row(a, with_start(json.loads(path.read_text()), path.parent)))
            else:
                missing.append(str(path.parent))
    if missing:
        print("not finished (run bash bench/init.sh):", ", ".join(missing))
    csv = args.results / "init.csv"
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(csv, index=False)
    print(render_csv(csv, title="Round-to-nearest vs reconstruction start, before and after QAT", notes=NOTES))


NOTES = (
    "SST-2, default model (MiniLM-L6), teacher ../shared/models/minilm-l6-sst2 (dev 89.33). Each assignment is "
    "trained twice from the same seed with the same budget: from round-to-nearest weights (init=rtn) and from the "
    "reconstruction start (init=lkd: each Transformer block fitted to the teacher's on 32 calibration batches of "
    "train, 2 passes, AdamW lr 1e-3, earlier blocks already quantized; then the pooler/classifier to the teacher's "
    "logits). QAT: 1 epoch over 16,000 train examples, batch 32, lr 2e-5, distillation; bf16 autocast, 1 thread. "
    "dev_accuracy_ptq / search_val_accuracy_ptq: the start, before QAT (activation ranges: calibrated by lkd, each "
    "batch's own for rtn). ternary-c16.2: the assignment of results/runs/sst2-ternary-compression16.2 (16.6x), "
    "retrained with hidden-state distillation as its search did.",
    "search_val_accuracy_ptq of the rtn rows of w4a8 and TernaryBERT: those two runs predate its measurement; it "
    "was measured by rebuilding their round-to-nearest start from config.yaml and bits.json (deterministic; the "
    "rebuilt start's dev accuracy equals the recorded dev_accuracy_ptq, which bench/init_table.py checks).",
    "One seed per row; 1 dev example = 0.11 points. Regenerate: bash bench/init.sh.",
)


if __name__ == "__main__":
    main()
