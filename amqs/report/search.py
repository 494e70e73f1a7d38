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
        st = json.loads(step_path.read_text())
        parts.append(
            "# Cost of a search step\n\n"
            f"Side by side in one run (interleaved, batch {st['batch']} x {st['length']} tokens, "
            f"{st['threads']} thread(s), median of {st['steps']} steps): a supernet step (architecture step on a "
            f"search-val batch + weight step, both with the 4 candidates of every subgroup) takes "
            f"**{st['supernet_over_qat']:.2f}x** the time of a fixed-assignment QAT step (w4a8) with the same "
            f"distillation. Peak resident memory of a process doing only that: supernet "
            f"{st['peak_rss_mb_supernet']:.0f} MB vs QAT {st['peak_rss_mb_qat']:.0f} MB "
            f"(**{st['peak_rss_supernet_over_qat']:.2f}x**).\n\nCommand: `{st['command']}`\n"
        )
    out = results / "search.md"
    out.write_text("\n".join(parts))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, nargs="?", default=Path("results"))
    print(render(p.parse_args(argv).results))


if __name__ == "__main__":
    main()
