"""``REPORT.md`` of an ``amqs-pipeline`` run: what was made, how good, how small, how fast, what it cost.

Reads only what the stages returned (amqs.pipeline: ``pipeline.json``) and the run's ``bits.json``; draws the
bit allocation as ``bits.png`` beside the report.

Example::

    render_report(cfg, json.loads(Path("outputs/quickstart/pipeline.json").read_text()),
                  Path("outputs/quickstart/REPORT.md"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pandas as pd
from omegaconf import DictConfig

from amqs.quant import BitAssignment
from amqs.report.plots import plot_bits
from amqs.report.tables import to_markdown


def _pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _mb(x: Optional[float]) -> str:
    return "–" if x is None else f"{x / 1e6:.2f} MB"


def quality_table(state: dict[str, Any]) -> list[str]:
    """Teacher, post-training quantization, retrained and exported: accuracy and size, one row each."""
    t, s, e = state["teacher"], state["search"], state.get("export") or {}
    rows = [("fp32 teacher", _pct(t.get("dev_accuracy")), "–", _mb(s.get("fp32_encoder_bytes")),
             _mb(s.get("fp32_total_bytes"))),
            ("searched, before retraining (PTQ)", _pct(s.get("dev_accuracy_ptq")), "–", _mb(s.get("encoder_bytes")),
             _mb(s.get("total_bytes"))),
            ("searched, retrained", _pct(s.get("dev_accuracy")), _pct(s.get("search_val_accuracy")),
             _mb(s.get("encoder_bytes")), _mb(s.get("total_bytes")))]
    if e:
        rows.append(("exported, ONNX Runtime", _pct(e.get("dev_accuracy_exported")), "–",
                     _mb(e.get("encoder_stored_bytes")), _mb(e.get("file_bytes")) + " on disk"))
    lines = ["| model | dev accuracy (%) | search-val accuracy (%) | encoder | whole model |", "|---|---|---|---|---|"]
    return lines + [f"| {' | '.join(r)} |" for r in rows]


def latency_table(rows: list[dict[str, Any]]) -> str:
    """p50 latency per model at each shape and thread count, with the speed-up against ORT int8."""
    df = pd.DataFrame(rows)
    df["shape"] = df["batch"].astype(str) + "x" + df["length"].astype(str)
    cols = ["model", "shape", "threads", "p50_ms", "speedup_vs_ort_fp32", "speedup_vs_ort_int8", "file_bytes",
            "dev_accuracy"]
    return to_markdown(df[cols], "Latency, side by side").split("\n", 2)[2]


def render_report(cfg: DictConfig, state: dict[str, Any], path: Path) -> Path:
    """Write the report (and ``bits.png`` beside it); returns its path."""
    from amqs.utils.run import run_dir
    from amqs.utils.provenance import cpu_name

    s, t = state["search"], state["teacher"]
    run = run_dir(cfg)
    bits = plot_bits(BitAssignment.from_json(run / "bits.json"), path.parent / "bits.png",
                     title=f"Bits per subgroup, {cfg.name}")
    teacher = f"`{t['source']}`" + (" (fine-tuned by this pipeline, search-val held out)" if t["fine_tuned_here"]
                                    else "")
    lines = [
        f"# amqs pipeline: {cfg.name}", "",
        f"Command: `{state['command']}` (git {state['git_revision']}); CPU: {cpu_name()}; "
        f"{cfg.train.num_threads or 'default'} training thread(s) on {cfg.device}; the exports run on ONNX Runtime's "
        "CPU provider.", "",
        f"**What it made.** A {cfg.data.task} classifier from `{cfg.model.name}` distilled from the teacher "
        f"{teacher}. The search ({cfg.search.space} space, budget {cfg.budget.kind} {cfg.budget.value}) chose bits "
        f"per subgroup: **{s['compression']:.2f}x** encoder compression, {s['avg_bits']:.2f} bits per searched weight "
        f"on average, {100 * s['pruned_fraction']:.1f}% of the searched weights pruned "
        f"({s['repair_steps']} repair steps to meet the budget). Bit allocation: [{bits.name}]({bits.name}).", "",
        *quality_table(state), "",
    ]
    if state.get("bench"):
        lines += ["**How fast.** Random token ids, full attention mask; every model timed interleaved in one run, "
                  "so speed-ups are ratios measured side by side (absolute milliseconds on a shared machine are "
                  "noisy). `pytorch-fp32` is the teacher as users run it today; `ort-int8-dynamic` is ONNX "
                  "Runtime's usual int8 recipe of it; `searched` is this run's export.", "",
                  latency_table(state["bench"]), ""]
    lines += ["**What it cost.** This invocation, wall clock (a reused teacher or search costs only its loading): "
              + ", ".join(f"{k} {v:.0f} s" for k, v in state["seconds"].items())
              + f"; total {sum(state['seconds'].values()):.0f} s. Training time the run recorded when it ran: search "
              f"{s.get('search_seconds') or 0:.0f} s + retrain {s.get('retrain_seconds') or 0:.0f} s.", "",
              f"Files: the run `{run}` (bits.json, metrics.json, retrain/), the export `{state.get('export', {}).get('dir', '–')}`"
              f" (model.onnx; `amqs-predict` reads it), the tables `search.csv`, `exports.csv`, `bench.csv` beside "
              "this report.", ""]
    path.write_text("\n".join(lines))
    return path
