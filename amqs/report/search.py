"""``results/search.md``: searched models next to the uniform baselines, plus the step-cost bench.

    python -m amqs.report.search results

Reads ``search.csv``, ``baselines.csv`` (the same task's rows) and, when present,
``search_step.json`` (bench/search_step.py), and writes ``search.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from amqs.report.tables import to_markdown

NOTES = (
    "Dev sets, default model (MiniLM-L6); MRPC rows start from the MRPC teacher (results/teachers/minilm-l6-mrpc, "
    "dev 78.68 / F1 84.82) and use its whole train split (search 1 epoch, retrain 3). Spaces: `default` = {prune, 2, 4, 8} bits, `aqbert` = {prune, 2, 4} "
    "bits, both with 128 subgroups per matrix; `ternary` = Q/K/V per attention head (tied, removable), FFN "
    "blocks of 16 neurons (removable), residual-stream outputs at {2, 4, 8} in 128 subgroups, TWN ternary at 2 "
    "bits (symmetric at 4/8); all with 8-bit activations and embeddings. `distill` = the weights' loss in search "
    "and retrain: `logits` = CE + logit distillation, `hidden` = that + MSE of every hidden state "
    "(TernaryBERT's). Searched rows start from "
    "the teacher in their `teacher` column: the shared fp32 SST-2 teacher (../shared/models/minilm-l6-sst2, "
    "dev 89.33; it was trained on the search-val rows too) or the held-out one (results/teachers/"
    "minilm-l6-sst2-heldout, dev 89.45, never saw search-val); uniform rows start from the shared one. Searched rows: supernet search for 0.5 epoch over 16,000 "
    "train examples (architecture steps on the search-validation split, never dev), derive + repair, then "
    "retrain for 1 epoch over the same 16,000 examples; uniform rows: 1 epoch over the same 16,000 examples. "
    "So retraining budgets are equal and the searched rows spend 0.5 epoch more on the search.",
    "compression = fp32 encoder bytes / encoder bytes (Transformer layers incl. quantization parameters, "
    "biases, LayerNorms, activation ranges; embeddings excluded, as AQ-BERT reports). avg_bits = stored weight "
    "bits per searched weight (pruned = 0); pruned_fraction = share of searched weights pruned.",
    "Did the search decide (amqs.search.diagnostics)? entropy_fraction = the final mean entropy of softmax(alpha) "
    "over its maximum (1: the logits never moved); expected_over_budget = E[C] under softmax(alpha) / target; "
    "repair_fraction = share of the choices the budget repair changed after the argmax. undecided = "
    "entropy_fraction > 0.3 or repair_fraction > 0.01. Runs that predate these numbers: entropy_fraction rebuilt "
    "from the search log's last arch_entropy over log(number of the space's default choices), the rest unknown (–).",
)


def render(results: Path) -> Path:
    """Write ``results/search.md``; returns its path."""
    search = pd.read_csv(results / "search.csv").sort_values("budget_compression")
    parts = [to_markdown(search, "Mixed-precision search", NOTES)]
    base_path = results / "baselines.csv"
    if base_path.exists():
        base = pd.read_csv(base_path)
        base = base[base["task"].isin(search["task"].unique())]
        parts.append(to_markdown(base, "Uniform baselines and literature recipes (baselines.csv, same task)"))
    step_path = results / "search_step.json"
    if step_path.exists():
        parts.append(_step_cost(json.loads(step_path.read_text())))
    out = results / "search.md"
    out.write_text("\n".join(parts))
    return out


def _step_cost(st: dict) -> str:
    """The "Cost of a search step" section from bench/search_step.py's JSON (also the older every-step form)."""
    peak = (f"Peak resident memory of a process doing only that: supernet {st['peak_rss_mb_supernet']:.0f} MB vs QAT "
            f"{st['peak_rss_mb_qat']:.0f} MB (**{st['peak_rss_supernet_over_qat']:.2f}x**).\n\n"
            f"Command: `{st['command']}`\n")
    where = f"interleaved, batch {st['batch']} x {st['length']} tokens, {st['threads']} thread(s)"
    if "arch_every" not in st:  # recorded before search.arch.every: an architecture step at every step
        return ("# Cost of a search step\n\n"
                f"Side by side in one run ({where}, median of {st['steps']} steps): a supernet step (architecture "
                f"step on a search-val batch + weight step, both with the 4 candidates of every subgroup) takes "
                f"**{st['supernet_over_qat']:.2f}x** the time of a fixed-assignment QAT step (w4a8) with the same "
                f"distillation. {peak}")
    k = st["arch_every"]
    arch = "at every step" if k == 1 else f"on one step in {k}"
    bf16 = (f" (under bf16 autocast: **{st['supernet_over_qat_bf16']:.2f}x**)"
            if "supernet_over_qat_bf16" in st else "")
    return ("# Cost of a search step\n\n"
            f"Side by side in one run ({where}, {st['precision']}, the mean of {st['steps']} steps: whole cycles of "
            f"the schedule): a supernet step with conf/search/default.yaml's schedule (the weight step at every "
            f"step, an architecture step on a search-val batch {arch}, sharing the quantized candidates) "
            f"takes on average **{st['supernet_over_qat']:.2f}x** the time of a fixed-assignment QAT step (w4a8) "
            f"with the same distillation{bf16}; a step that moves the architecture "
            f"{st['supernet_arch_step_s_median'] / st['qat_step_s_median']:.2f}x (medians). {peak}")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, nargs="?", default=Path("results"))
    print(render(p.parse_args(argv).results))


if __name__ == "__main__":
    main()
