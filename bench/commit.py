"""Does a search setting commit? The search phase alone, and its derived assignment's start on search-val.

    python bench/commit.py --name c13-hard search.t_final=0.05 search.hard_from=0.6 search.size_on=expected
    python bench/commit.py --name c13-hawq --bits results/runs/cmp-sst2-c13-hawq-s42/bits.json   # another's start

Composes ``amqs-search`` with the comparison's settings (SST-2, the held-out teacher (teacher=auto), 16,000 train
examples, search 0.5 epoch, bf16, the lkd start, 1 thread, the 13x budget unless overridden) plus the given overrides; runs the supernet search
only (no retrain) in ``<--out>/<name>/``; then fits the derived assignment's student to the teacher (the lkd
start every retrain begins with) and measures it on the search-validation split -- never on dev, so settings
are chosen on search-val alone. One row per setting goes to ``<--out>/commit.csv`` (key: name): the search's
decision numbers (amqs.search.diagnostics), its seconds and that start accuracy. Resumable: the search
continues from its checkpoint; a finished setting is reported again without work.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from amqs.config import CONF_DIR, register_configs
from amqs.data import load_glue, task_spec, make_loader
from amqs.quant import BitAssignment
from amqs.search.diagnostics import decision_metrics
from amqs.search.run import search
from amqs.train.metrics import evaluate
from amqs.train.precision import pin_precision
from amqs.train.qat import lkd_start, load_teacher, pin_teacher, quantize_student
from amqs.utils.run import config_hash, save_config, upsert_csv, write_json

BASE = ["teacher=auto", "data.max_train_examples=16000", "search.epochs=0.5", "train.precision=bf16",
        "train.init=lkd", "train.num_threads=1", "train.progress=false", "budget=c13"]
COLUMNS = ("name", "budget_compression", "entropy_fraction", "expected_over_budget", "repair_fraction", "undecided",
           "argmax_over_target", "encoder_over_target", "search_val_accuracy_start", "search_seconds", "moved_fraction",
           "config_hash", "teacher", "command")


def start_accuracy(cfg, assignment: BitAssignment) -> float:
    """Search-val accuracy of the assignment's student after the lkd start (no QAT)."""
    splits = load_glue(cfg.data)
    task = task_spec(cfg.data)
    teacher, tokenizer = load_teacher(cfg, task.num_labels)
    student, _ = quantize_student(teacher, assignment, cfg)
    loader = make_loader(splits["train"], tokenizer, max_length=cfg.data.max_length,
                         batch_size=cfg.train.batch_size, shuffle=True, seed=cfg.train.seed)
    lkd_start(cfg, student, teacher, loader, "cpu")
    val = make_loader(splits["search_val"], tokenizer, max_length=cfg.data.max_length,
                      batch_size=cfg.train.eval_batch_size, shuffle=False, seed=cfg.train.seed)
    return evaluate(student, val, task.metrics)["accuracy"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--out", type=Path, default=Path("outputs/commit"))
    p.add_argument("--bits", type=Path, default=None,
                   help="measure this finished assignment's start instead of searching (e.g. another method's)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("search", BASE + args.overrides)
    cfg = pin_precision(pin_teacher(cfg), "cpu")
    torch.set_num_threads(cfg.train.num_threads)
    out = args.out / args.name
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    if args.bits is not None:
        BitAssignment.from_json(args.bits).to_json(out / "bits.json")
    elif not (out / "bits.json").exists():
        search(cfg, out).to_json(out / "bits.json")
    assignment = BitAssignment.from_json(out / "bits.json")
    meta = assignment.meta
    if not (out / "start.json").exists():
        t = time.perf_counter()
        write_json(out / "start.json", {"search_val_accuracy": start_accuracy(cfg, assignment),
                                        "seconds": round(time.perf_counter() - t, 1)})
    start = json.loads((out / "start.json").read_text())
    row = {"name": args.name, "budget_compression": cfg.budget.value, **decision_metrics(meta),
           "argmax_over_target": round(meta["argmax_encoder_bytes"] / meta["target_bytes"], 4),
           "encoder_over_target": round(meta["encoder_bytes"] / meta["target_bytes"], 4),
           "search_val_accuracy_start": round(start["search_val_accuracy"], 4),
           "search_seconds": meta.get("search_seconds"), "moved_fraction": meta.get("moved_fraction"),
           "config_hash": config_hash(cfg), "teacher": cfg.teacher.source,
           "command": " ".join(["python bench/commit.py", "--name", args.name, *args.overrides]
                               + (["--bits", str(args.bits)] if args.bits else []))}
    upsert_csv(args.out / "commit.csv", row, key=("name",), columns=COLUMNS)
    print(json.dumps(row), file=sys.stdout)


if __name__ == "__main__":
    main()
