"""Supernet training step vs fixed-assignment QAT step, side by side, same batch; and peak memory.

    python bench/search_step.py --steps 12 --batch 32 --length 64 --out results/search_step.json

Both models are the default MiniLM geometry (embedded weights). The QAT step is what `amqs-qat`
does per batch (uniform w4a8, logit distillation: student forward/backward + teacher forward +
AdamW); the supernet step is what `amqs-search` does (architecture step on a search-val batch,
then the weight step with distillation), default space {0,2,4,8} x 128 subgroups. Steps are
interleaved (QAT, supernet, QAT, ...) so machine noise hits both alike; the ratio of medians is
reported. Peak memory is the max RSS of a fresh process running only one kind of step.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from amqs.config import DistillConfig, ModelConfig
from amqs.models import load_classifier
from amqs.quant import apply_assignment, uniform_assignment
from amqs.search.architect import Architect, ArchitectConfig, search_step, weight_optimizer
from amqs.search.objective import Budget, SearchObjective, resolve_budget
from amqs.search.space import load_space
from amqs.search.supernet import build_supernet
from amqs.train.distill import DistillLoss
from amqs.train.loop import make_optimizer
from amqs.train.losses import ce_loss
from amqs.train.precision import with_precision


def _batch(n: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(1000, 30000, (n, length), generator=g),
            "attention_mask": torch.ones(n, length, dtype=torch.long),
            "token_type_ids": torch.zeros(n, length, dtype=torch.long),
            "labels": torch.randint(0, 2, (n,), generator=g)}


def build(kind: str, precision: str = "fp32"):
    """One training step of ``kind`` (finetune | qat | supernet) on the MiniLM geometry, as a closure
    ``step(train_batch, val_batch)``, its forward passes under ``precision`` (amqs.train.precision)."""
    teacher, _ = load_classifier(ModelConfig(), num_labels=2)
    student = copy.deepcopy(teacher)
    loss = with_precision(DistillLoss(teacher, DistillConfig()), precision)
    if kind in ("qat", "finetune"):
        if kind == "qat":
            apply_assignment(student, uniform_assignment(student, bits=4, num_subgroups=128))
        else:
            loss = with_precision(ce_loss, precision)
        opt = make_optimizer(student, 2e-5, 0.01, fused=True)  # the configured default (conf/train)

        def step(train_batch, val_batch):
            opt.zero_grad(set_to_none=True)
            loss(student, train_batch).backward()
            opt.step()
    else:
        build_supernet(student, load_space("default"))
        target = resolve_budget(Budget("compression", 13.0), student)
        architect = Architect(student, with_precision(SearchObjective(target), precision), train_loss=loss,
                              cfg=ArchitectConfig(optimizer="adam", lr=0.02))
        wopt = weight_optimizer(student, 2e-5, fused=True)
        counter = {"i": 0}

        def step(train_batch, val_batch):
            search_step(student, architect, wopt, train_batch, val_batch, step=counter["i"], train_loss=loss, tau=1.0)
            counter["i"] += 1
    student.train()
    return step


def peak_rss_mb(kind: str, steps: int, batch: int, length: int) -> float:
    """Max RSS of a fresh process that builds one kind of model and runs ``steps`` steps."""
    # VmHWM (the address space's high-water mark) starts afresh at exec; ru_maxrss may carry the
    # parent's peak into the child on Linux.
    code = (f"import torch; torch.set_num_threads(1); from bench.search_step import build, _batch\n"
            f"s=build('{kind}'); b=_batch({batch},{length},0)\n"
            f"for _ in range({steps}): s(b, b)\n"
            f"print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("results/search_step.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    peak = {k: peak_rss_mb(k, 3, args.batch, args.length) for k in ("qat", "supernet")}  # before this process grows
    steps = {k: build(k) for k in ("qat", "supernet")}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(args.warmup + args.steps):
        tb, vb = _batch(args.batch, args.length, 2 * i), _batch(args.batch, args.length, 2 * i + 1)
        for k, step in steps.items():
            t = time.perf_counter()
            step(tb, vb)
            if i >= args.warmup:
                times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    del steps
    result = {
        "batch": args.batch, "length": args.length, "threads": args.threads, "steps": args.steps,
        "qat_step_s_median": med["qat"], "supernet_step_s_median": med["supernet"],
        "supernet_over_qat": med["supernet"] / med["qat"],
        "peak_rss_mb_qat": peak["qat"], "peak_rss_mb_supernet": peak["supernet"],
        "command": "python " + " ".join(sys.argv),
    }
    result["peak_rss_supernet_over_qat"] = result["peak_rss_mb_supernet"] / result["peak_rss_mb_qat"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
