"""Training step time in fp32 vs bf16 autocast, side by side: a fine-tune, a QAT and a supernet step.

    python bench/train_speed.py --steps 12 --batch 32 --length 32 --threads 1 --out results/train_speed.json

Each kind of step (bench/search_step.py's builders: MiniLM geometry with the embedded weights; fine-tune = CE +
AdamW; QAT = uniform w4a8 with logit distillation; supernet = the architecture step on a search-val batch then
the weight step, default space) is built twice, once per precision (amqs.train.precision). Every round runs
each of the six steps once on the same batch (interleaved: machine noise hits all alike); the ratio of the
median step times, fp32 over bf16, is reported per kind (>1: bf16 is faster). Writes
``{finetune,qat,supernet}_fp32_over_bf16`` with the medians, the CPU and the command.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.search_step import _batch, build  # noqa: E402
from amqs.utils.provenance import cpu_flags, cpu_name  # noqa: E402

KINDS = ("finetune", "qat", "supernet")
PRECISIONS = ("fp32", "bf16")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("outputs/train_speed.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    steps = {(k, pr): build(k, pr) for k in KINDS for pr in PRECISIONS}
    times: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    for i in range(args.warmup + args.steps):
        tb, vb = _batch(args.batch, args.length, 2 * i), _batch(args.batch, args.length, 2 * i + 1)
        for key, step in steps.items():
            t = time.perf_counter()
            step(tb, vb)
            if i >= args.warmup:
                times[key].append(time.perf_counter() - t)
    med = {key: statistics.median(v) for key, v in times.items()}
    result = {"batch": args.batch, "length": args.length, "threads": args.threads, "steps": args.steps,
              "cpu": cpu_name(), "cpu_flags": cpu_flags(), "torch": torch.__version__}
    for k in KINDS:
        result[f"{k}_step_s_fp32"] = med[k, "fp32"]
        result[f"{k}_step_s_bf16"] = med[k, "bf16"]
        result[f"{k}_fp32_over_bf16"] = med[k, "fp32"] / med[k, "bf16"]
    result["command"] = "python " + " ".join(sys.argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
