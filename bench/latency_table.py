"""Measure the latency table of the search's latency model (amqs.search.latency), and check it on real exports.

``build``: the model (a trained teacher folder; weights do not change int8 timing) quantized w8a8 (the export's
int8 path) and exported with every layer at h heads (the value rows of the first H - h heads pruned, which the
export removes) or at f FFN neurons, the rest full; all variants timed interleaved with the full model at each
shape and thread count; one LatencyTable JSON per shape and thread count into --out.
``check``: each export's kept heads and FFN neurons per layer (its bits.json; ``--random N`` adds N exports of
the table's model with random heads and neurons per layer), the table's prediction, and the export timed
interleaved with the table's full model: the prediction error of the ratio to the full model (the
ratio, as every speed here, is what a noisy machine can measure) into <out>/check.csv.

    python bench/latency_table.py build --model ../shared/models/minilm-l6-sst2 --out results/latency
    python bench/latency_table.py check --table results/latency/minilm-l6-1x128-t1.json EXPORT_DIR ...
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amqs.bench import time_exports  # noqa: E402
from amqs.export.app import export_model  # noqa: E402
from amqs.models.loading import load_classifier  # noqa: E402
from amqs.config import ModelConfig  # noqa: E402
from amqs.quant import BitAssignment, apply_assignment, uniform_assignment  # noqa: E402
from amqs.quant.targets import DEFAULT_LINEAR_PATTERNS  # noqa: E402
from amqs.search.latency import INTER, VALUE, LatencyTable  # noqa: E402
from amqs.utils.provenance import cpu_name  # noqa: E402
from amqs.utils.run import write_json  # noqa: E402

FULL = "full"


def variant(model: torch.nn.Module, heads: list[int], neurons: list[int]) -> BitAssignment:
    """w8a8 with the value rows of the first H - heads[l] heads and the first F - neurons[l] FFN rows of layer l
    pruned (one subgroup per row of those matrices)."""
    cfg = model.config
    a = uniform_assignment(model, DEFAULT_LINEAR_PATTERNS, 8, num_subgroups={r".*": 1}, act_bits=8)
    head_dim, bits = cfg.hidden_size // cfg.num_attention_heads, {}
    for layer in range(cfg.num_hidden_layers):
        gone = (cfg.num_attention_heads - heads[layer]) * head_dim
        bits[VALUE.format(layer)] = [0] * gone + [8] * (cfg.hidden_size - gone)
        bits[INTER.format(layer)] = [0] * (cfg.intermediate_size - neurons[layer]) + [8] * neurons[layer]
    modules = dict(a.modules)
    for name, b in bits.items():
        old = a.modules[name]
        modules[name] = type(old)(len(b), tuple(b), old.out_features, old.in_features, "linear")
    return BitAssignment(modules=modules, scheme=a.scheme, act_bits=a.act_bits)


def export_variant(source: str, heads: int | list[int], neurons: int | list[int], out: Path) -> Path:
    """The export of :func:`variant` (an int: every layer the same), with its bits.json; reused when present."""
    if (out / "model.onnx").exists():
        return out
    model, tokenizer = load_classifier(ModelConfig(name="latency", source=source), 2)
    layers = model.config.num_hidden_layers
    a = variant(model, [heads] * layers if isinstance(heads, int) else heads,
                [neurons] * layers if isinstance(neurons, int) else neurons)
    apply_assignment(model, a)
    model.train()
    with torch.no_grad():  # calibrate the activation ranges (values do not matter for timing)
        ids = torch.randint(1000, model.config.vocab_size, (8, 128), generator=torch.Generator().manual_seed(0))
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    export_model(model.eval(), tokenizer, out, task="sst2", max_length=128)  # any 2-label task: timing only
    a.to_json(out / "bits.json")
    return out


def build(args: argparse.Namespace) -> None:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(args.model)
    H, F, L = cfg.num_attention_heads, cfg.intermediate_size, cfg.num_hidden_layers
    heads = sorted({round(H * k / 4) for k in range(5)})
    neurons = sorted({round(F * k / 4) for k in range(5)})
    work = args.out / "variants"
    dirs = {FULL: export_variant(args.model, H, F, work / FULL)}
    dirs |= {f"h{h}": export_variant(args.model, h, F, work / f"h{h}") for h in heads[:-1]}
    dirs |= {f"f{f}": export_variant(args.model, H, f, work / f"f{f}") for f in neurons[:-1]}
    for batch, length in args.shapes:
        for threads in args.threads:
            times = time_exports(dirs, batch=batch, length=length, threads=threads, warmup=args.warmup,
                                 rounds=args.rounds)
            ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
            table = LatencyTable(batch, length, threads, L, H, F, round(ms[FULL], 4), tuple(heads),
                                 tuple(round(ms[f"h{h}"] if h < H else ms[FULL], 4) for h in heads), tuple(neurons),
                                 tuple(round(ms[f"f{f}"] if f < F else ms[FULL], 4) for f in neurons),
                                 meta={"model": args.model, "cpu": cpu_name(), "rounds": args.rounds,
                                       "command": args.command})
            path = args.out / f"{args.name}-{batch}x{length}-t{threads}.json"
            write_json(path, table.to_dict())
            print(path, {k: round(v, 2) for k, v in ms.items()})


def kept(export: Path, table: LatencyTable) -> tuple[torch.Tensor, torch.Tensor]:
    """Heads and FFN neurons kept per layer by the export (its bits.json: value rows / intermediate rows)."""
    a = BitAssignment.from_json(export / "bits.json")
    heads, neurons = [], []
    for layer in range(table.layers):
        v, inter = a.modules[VALUE.format(layer)], a.modules[INTER.format(layer)]
        rows = np.repeat(np.array(v.bits) == 0, v.rows_per_subgroup).reshape(table.num_heads, -1)
        heads.append(table.num_heads - int(rows.all(1).sum()))
        neurons.append(inter.rows_per_subgroup * sum(b != 0 for b in inter.bits))
    return torch.tensor(heads, dtype=torch.float64), torch.tensor(neurons, dtype=torch.float64)


def random_variants(table: LatencyTable, model: str, n: int, work: Path) -> list[Path]:
    """``n`` exports of ``model`` with random heads and FFN neurons per layer (seeded): layers that differ."""
    rng = np.random.default_rng(0)
    return [export_variant(model, rng.integers(0, table.num_heads + 1, table.layers).tolist(),
                           (rng.integers(0, 25, table.layers) * table.intermediate // 24).tolist(), work / f"random{i}")
            for i in range(n)]


def check(args: argparse.Namespace) -> None:
    table = LatencyTable.from_json(args.table)
    full = args.table.parent / "variants" / FULL
    exports = list(args.exports) + random_variants(table, table.meta["model"], args.random, args.table.parent / "variants")
    rows = []
    for export in exports:
        heads, neurons = kept(export, table)
        predicted = float(table.predict(heads, neurons)) / table.full_ms
        times = time_exports({"export": export, FULL: full}, batch=table.batch, length=table.length,
                             threads=table.threads, warmup=args.warmup, rounds=args.rounds)
        measured = statistics.median(times["export"]) / statistics.median(times[FULL])
        rows.append({"export": str(export), "heads": int(heads.sum()), "neurons": int(neurons.sum()),
                     "predicted_over_full": round(predicted, 4), "measured_over_full": round(measured, 4),
                     "error": round(predicted / measured - 1, 4), "command": args.command})
        print(rows[-1])
    out = args.table.parent / "check.csv"
    pd.DataFrame(rows).to_csv(out, index=False)
    print(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--model", required=True, help="a trained BERT classifier folder (its geometry is timed)")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--name", default="minilm-l6")
    b.add_argument("--shapes", default="1x128,8x128")
    b.add_argument("--threads", default="1,2")
    c = sub.add_parser("check")
    c.add_argument("--table", type=Path, required=True)
    c.add_argument("exports", type=Path, nargs="*", help="export folders (amqs-export, with their bits.json)")
    c.add_argument("--random", type=int, default=0, help="also N exports of the table's model, random per layer")
    for q in (b, c):
        q.add_argument("--warmup", type=int, default=5)
        q.add_argument("--rounds", type=int, default=50)
    args = p.parse_args()
    args.command = "python bench/latency_table.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.cmd == "build":
        args.shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
        args.threads = [int(t) for t in args.threads.split(",")]
        torch.set_num_threads(1)
        build(args)
    else:
        check(args)


if __name__ == "__main__":
    main()
