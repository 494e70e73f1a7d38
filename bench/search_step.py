"""Supernet training step vs fixed-assignment QAT step, side by side, same batch; and peak memory.

    python bench/search_step.py --steps 12 --batch 32 --length 64 --threads 1 --out results/search_step.json

Both models are the default MiniLM geometry (embedded weights). The QAT step is what `amqs-qat` does per
batch (uniform w4a8, logit distillation: student forward/backward + teacher forward, gradient clipping, AdamW);
the supernet step is what `amqs-search` does with conf/search/default.yaml's architecture settings (warm-up
off: the bench times the steps after it): the architecture step on a search-val batch on every
``search.arch.every``-th step, then the weight step with distillation, default space {0,2,4,8} x 128 subgroups.
Steps are interleaved (QAT, supernet, QAT, ...) so machine noise hits both alike, in fp32 and then in bf16
(amqs.train.precision; both kinds of step in the same precision). The timed steps are a whole number of
``every``-cycles, so the supernet's MEAN step time has its architecture steps in their configured share:
``supernet_over_qat`` is the ratio of the mean step times (``*_bf16``: in bf16). The medians of the two kinds of
supernet step (with and without an architecture step) give a noise-robust cross-check,
``supernet_over_qat_from_medians``. Peak memory is the max RSS of a fresh process running only one kind of step
(its first step moves the architecture).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from amqs.config import CONF_DIR, DistillConfig, ModelConfig, register_configs
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

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")

# A step: (train batch, search-val batch) -> whether the architecture moved (None: a fixed-assignment step).
Step = Callable[[dict, dict], "bool | None"]


def configured_arch(search: str = "default") -> ArchitectConfig:
    """conf/search/<search>.yaml's architecture settings (schema-checked), with the warm-up off.

    Example:
        >>> configured_arch().warmup_epochs
        0.0
    """
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        arch = compose("search", overrides=[f"search={search}"]).search.arch  # as amqs-search composes it
    return dataclasses.replace(OmegaConf.to_object(arch), warmup_steps=0, warmup_epochs=0.0)


def _batch(n: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(1000, 30000, (n, length), generator=g),
            "attention_mask": torch.ones(n, length, dtype=torch.long),
            "token_type_ids": torch.zeros(n, length, dtype=torch.long),
            "labels": torch.randint(0, 2, (n,), generator=g)}


def build(kind: str, precision: str = "fp32", arch: ArchitectConfig | None = None) -> Step:
    """One training step of ``kind`` (finetune | qat | supernet) on the MiniLM geometry, as a closure
    ``step(train_batch, val_batch)``, its forward passes under ``precision`` (amqs.train.precision).

    ``arch``: the supernet's architecture settings; None: Adam, an update at every step (what
    bench/train_speed.py times); :func:`configured_arch` for what ``amqs-search`` runs.
    """
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
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)  # conf/train: max_grad_norm
            opt.step()
    else:
        build_supernet(student, load_space("default"))
        target = resolve_budget(Budget("compression", 13.0), student)
        architect = Architect(student, with_precision(SearchObjective(target), precision), train_loss=loss,
                              cfg=arch or ArchitectConfig(optimizer="adam", lr=0.02))
        wopt = weight_optimizer(student, 2e-5, fused=True)
        counter = {"i": 0}

        def step(train_batch, val_batch):
            stats = search_step(student, architect, wopt, train_batch, val_batch, step=counter["i"],
                                train_loss=loss, tau=1.0)
            counter["i"] += 1
            return "val_loss" in stats
    student.train()
    return step


def peak_rss_mb(kind: str, steps: int, batch: int, length: int, precision: str) -> float:
    """Max RSS of a fresh process that builds one kind of model and runs ``steps`` steps (configured arch)."""
    # VmHWM (the address space's high-water mark) starts afresh at exec; ru_maxrss may carry the
    # parent's peak into the child on Linux.
    code = (f"import torch; torch.set_num_threads(1)\n"
            f"from bench.search_step import build, configured_arch, _batch\n"
            f"s=build('{kind}', '{precision}', configured_arch()); b=_batch({batch},{length},0)\n"
            f"for _ in range({steps}): s(b, b)\n"
            f"print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def time_steps(precision: str, arch: ArchitectConfig, steps: int, warmup: int, batch: int,
               length: int) -> dict[str, float]:
    """Interleaved QAT and supernet steps in ``precision``; the step-time statistics of both."""
    built = {k: build(k, precision, arch) for k in ("qat", "supernet")}
    times: dict[str, list[float]] = {"qat": [], "arch": [], "weights_only": []}
    for i in range(warmup + steps):
        tb, vb = _batch(batch, length, 2 * i), _batch(batch, length, 2 * i + 1)
        for k, step in built.items():
            t = time.perf_counter()
            moved = step(tb, vb)
            if i >= warmup:
                times["qat" if k == "qat" else "arch" if moved else "weights_only"].append(time.perf_counter() - t)
    every, supernet = arch.every, times["arch"] + times["weights_only"]
    assert len(times["arch"]) * every == steps, "the timed steps must be whole every-cycles"
    qat_med = statistics.median(times["qat"])
    sn_from_medians = statistics.median(times["arch"])
    if every > 1:
        sn_from_medians = (sn_from_medians + (every - 1) * statistics.median(times["weights_only"])) / every
    return {
        "qat_step_s_median": qat_med, "qat_step_s_mean": statistics.fmean(times["qat"]),
        "supernet_step_s_mean": statistics.fmean(supernet), "supernet_step_s_median": statistics.median(supernet),
        "supernet_arch_step_s_median": statistics.median(times["arch"]),
        "supernet_weights_only_step_s_median": statistics.median(times["weights_only"]) if every > 1 else None,
        "supernet_over_qat": statistics.fmean(supernet) / statistics.fmean(times["qat"]),
        "supernet_over_qat_from_medians": sn_from_medians / qat_med,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12, help="timed steps per kind (rounded up to whole every-cycles)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--out", type=Path, default=Path("results/search_step.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    arch = configured_arch()
    steps = math.ceil(args.steps / arch.every) * arch.every
    result: dict = {"batch": args.batch, "length": args.length, "threads": args.threads, "steps": steps,
                    "warmup": args.warmup, "arch_every": arch.every, "precision": args.precisions[0],
                    "arch_config": "conf/search/default.yaml (warm-up off)"}
    for i, precision in enumerate(args.precisions):
        suffix = "" if i == 0 else f"_{precision}"  # the first precision's keys keep their historical names
        # Before this process grows: fresh processes, one kind each.
        peak = {k: peak_rss_mb(k, 3, args.batch, args.length, precision) for k in ("qat", "supernet")}
        result.update({f"peak_rss_mb_qat{suffix}": peak["qat"], f"peak_rss_mb_supernet{suffix}": peak["supernet"],
                       f"peak_rss_supernet_over_qat{suffix}": peak["supernet"] / peak["qat"]})
        stats = time_steps(precision, arch, steps, args.warmup, args.batch, args.length)
        result.update({f"{k}{suffix}": v for k, v in stats.items()})
    result["command"] = "python " + " ".join(sys.argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
