"""``amqs-bench``: CPU latency of exported amqs models against what users run today, side by side.

One run measures, interleaved round by round (so machine noise hits every model alike):

- ``pytorch-fp32``: the fp32 model in PyTorch (eager, ``torch.inference_mode``);
- ``ort-fp32``: the same model exported by amqs-export (no quantization) in ONNX Runtime;
- ``ort-int8-dynamic``: that ONNX model after ONNX Runtime's usual recipe,
  ``quantize_dynamic(per_channel=True, weight_type=QInt8)``;
- every ``--model NAME=EXPORT_DIR`` (amqs exports).

Inputs are random token ids with a full attention mask at each ``--shape BATCHxLENGTH`` (default
1x128 and 8x128); each model gets ``--warmup`` calls, then ``--rounds`` timed calls. Writes
``bench.csv`` and ``bench.md`` (p50/p90 in ms, speed-ups against ORT fp32 and ORT int8 at p50,
file sizes, and dev accuracy with ``--eval``) to ``--out``.

Example::

    amqs-bench --fp32-run results/runs/sst2-fp32 --model w8a8=exports/sst2-w8a8 --threads 1
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from amqs.models.family import uses_token_types
from amqs.runtime import EXPORT_FILE, MODEL_FILE, ExportedModel, load_session
from amqs.utils.cli import user_errors
from amqs.utils.provenance import cpu_name
from amqs.utils.run import check_results_dir

BENCH_COLUMNS = ("model", "runtime", "batch", "length", "threads", "cpu", "p50_ms", "p90_ms", "mean_ms",
                 "speedup_vs_ort_fp32", "speedup_vs_ort_int8", "file_bytes", "removed_ffn_fraction",
                 "dev_accuracy")


def parse_shape(s: str) -> tuple[int, int]:
    try:
        b, t = (int(v) for v in s.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"shape must look like 8x128, got {s!r}") from e
    if b <= 0 or t <= 0:
        raise argparse.ArgumentTypeError(f"shape must be positive, got {s!r}")
    return b, t


def quantize_int8_dynamic(fp32_dir: Path, out_dir: Path) -> Path:
    """ONNX Runtime's usual int8 recipe on the fp32 export, as an export folder of its own."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir.mkdir(parents=True, exist_ok=True)
    for f in fp32_dir.iterdir():
        if f.is_file() and f.name != MODEL_FILE:
            shutil.copyfile(f, out_dir / f.name)
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # ORT's quantizer logs every tensor it skips at INFO
    try:
        quantize_dynamic(str(fp32_dir / MODEL_FILE), str(out_dir / MODEL_FILE), per_channel=True,
                         weight_type=QuantType.QInt8)
    finally:
        root.level = level
    meta = json.loads((out_dir / EXPORT_FILE).read_text())
    meta.update(file_bytes=(out_dir / MODEL_FILE).stat().st_size,
                onnxruntime_ops="onnxruntime.quantization.quantize_dynamic(per_channel=True, weight_type=QInt8)")
    (out_dir / EXPORT_FILE).write_text(json.dumps(meta, indent=2))
    return out_dir


def time_interleaved(runners: dict[str, Callable[[], object]], warmup: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of every runner, measured round-robin."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return times


def time_exports(dirs: dict[str, Path], *, batch: int, length: int, threads: int, warmup: int,
                 rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each export folder's model on the same random ``batch x length`` ids, interleaved.

    Example:
        >>> times = time_exports({"a": Path("exports/a"), "b": Path("exports/b")}, batch=1, length=128,  # doctest: +SKIP
        ...                      threads=1, warmup=5, rounds=50)
    """
    sessions = {name: load_session(d / MODEL_FILE, threads) for name, d in dirs.items()}
    vocab = json.loads((next(iter(dirs.values())) / "config.json").read_text())["vocab_size"]
    feed = _random_feed(batch, length, vocab)
    return time_interleaved({name: (lambda s=s: s.run(["logits"], feed)) for name, s in sessions.items()},
                            warmup, rounds)


def dev_accuracy(export_dir: Path, data_cfg, threads: int) -> float:
    from amqs.data.glue import load_glue
    from amqs.train.metrics import METRICS

    m = ExportedModel(export_dir, threads=threads)
    dev = load_glue(data_cfg)["dev"]
    logits = m.predict_dataset(dev, batch_size=64)
    return METRICS["accuracy"](torch.from_numpy(logits.argmax(-1)), torch.tensor(dev["label"]))


def run_bench(fp32_run: Path, models: dict[str, Path], *, out: Path, work: Path, shapes: Sequence[tuple[int, int]],
              threads: int, warmup: int, rounds: int, evaluate: bool, command: str) -> pd.DataFrame:
    """``amqs-bench``: the fp32 run's model (PyTorch, ORT fp32, ORT int8) against ``models``, into ``out``."""
    from amqs.export.app import load_run

    torch.set_num_threads(threads)
    student, tokenizer, cfg, assignment, _ = load_run(fp32_run)
    check_results_dir(out, smoke=bool(cfg.get("smoke")), model_source=cfg.model.source)
    if assignment is not None:
        raise ValueError(f"--fp32-run {fp32_run} is a quantized run ({fp32_run}/bits.json); give the fp32 run")
    df = bench_against_fp32(student, tokenizer, cfg.data, models, work=work, shapes=shapes, threads=threads,
                            warmup=warmup, rounds=rounds, evaluate=evaluate, source=str(fp32_run))
    write_report(df, out, threads=threads, warmup=warmup, rounds=rounds, command=command)
    return df


def bench_against_fp32(fp32_model: torch.nn.Module, tokenizer, data_cfg, models: dict[str, Path], *, work: Path,
                       shapes: Sequence[tuple[int, int]], threads: int, warmup: int, rounds: int, evaluate: bool,
                       source: str = "") -> pd.DataFrame:
    """Time ``fp32_model`` in PyTorch, its ONNX export (ORT fp32), ORT's int8 recipe of that export and the
    export folders ``models``, interleaved, at every shape; with ``evaluate`` every ONNX model's dev accuracy."""
    from amqs.export.app import export_model

    torch.set_num_threads(threads)
    fp32_dir = work / "ort-fp32"
    export_model(fp32_model, tokenizer, fp32_dir, task=data_cfg.task, max_length=int(data_cfg.max_length),
                 meta={"source_run": source})
    int8_dir = quantize_int8_dynamic(fp32_dir, work / "ort-int8-dynamic")
    dirs = {"ort-fp32": fp32_dir, "ort-int8-dynamic": int8_dir, **models}
    sessions = {name: load_session(d / MODEL_FILE, threads) for name, d in dirs.items()}
    rows = []
    for batch, length in shapes:
        feed = _random_feed(batch, length, fp32_model.config.vocab_size)
        # every export takes token_type_ids (zeros here); a PyTorch model without token types takes none
        tfeed = {k: torch.from_numpy(v) for k, v in feed.items()
                 if k != "token_type_ids" or uses_token_types(fp32_model.config)}

        def torch_run() -> object:
            with torch.inference_mode():
                return fp32_model(**tfeed).logits

        runners: dict[str, Callable[[], object]] = {"pytorch-fp32": torch_run}
        for name, sess in sessions.items():
            runners[name] = (lambda s=sess: s.run(["logits"], feed))
        times = time_interleaved(runners, warmup, rounds)
        rows += _rows(times, dirs, batch, length, threads)
    df = pd.DataFrame(rows, columns=list(BENCH_COLUMNS))
    if evaluate:
        acc = {name: dev_accuracy(d, data_cfg, threads) for name, d in dirs.items()}
        df["dev_accuracy"] = df["model"].map(acc)
    return df


def _random_feed(batch: int, length: int, vocab: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000 if vocab > 2000 else 1, vocab, size=(batch, length)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def _rows(times: dict[str, list[float]], dirs: dict[str, Path], batch: int, length: int, threads: int) -> list[dict]:
    """One row per model: p50/p90/mean in ms and p50 speed-ups against ORT fp32 and ORT int8."""
    p50 = {n: float(np.percentile(t, 50)) for n, t in times.items()}
    rows = []
    for name, t in times.items():
        meta = json.loads((dirs[name] / EXPORT_FILE).read_text()) if name in dirs else {}
        rows.append({
            "model": name, "runtime": "pytorch" if name == "pytorch-fp32" else "onnxruntime",
            "batch": batch, "length": length, "threads": threads, "cpu": cpu_name(),
            "p50_ms": round(1000 * p50[name], 3), "p90_ms": round(1000 * float(np.percentile(t, 90)), 3),
            "mean_ms": round(1000 * float(np.mean(t)), 3),
            "speedup_vs_ort_fp32": round(p50["ort-fp32"] / p50[name], 3),
            "speedup_vs_ort_int8": round(p50["ort-int8-dynamic"] / p50[name], 3),
            "file_bytes": meta.get("file_bytes"), "removed_ffn_fraction": meta.get("removed_ffn_fraction"),
            "dev_accuracy": None,
        })
    return rows


def write_report(df: pd.DataFrame, out: Path, *, threads: int, warmup: int, rounds: int, command: str) -> None:
    import onnxruntime as ort

    from amqs.report.tables import to_markdown

    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "bench.csv", index=False)
    notes = [
        f"Command: `{command}`",
        "",
        f"CPU: {cpu_name()}; {threads} intra-op thread(s) for every runtime; ONNX Runtime {ort.__version__}, "
        f"PyTorch {torch.__version__}. {warmup} warm-up calls per model, then {rounds} rounds in which every "
        "model runs once (interleaved), random token ids, full attention mask. Speed-ups are p50 ratios "
        "from this one run (>1 = faster than the reference); absolute times on a shared machine are noisy.",
    ]
    (out / "bench.md").write_text(to_markdown(df, "CPU latency, side by side", notes))


def parser() -> argparse.ArgumentParser:
    """amqs-bench's command line (also parses recorded commands in tests)."""
    p = argparse.ArgumentParser(prog="amqs-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--fp32-run", type=Path, required=True, help="the fp32 run (e.g. results/runs/sst2-fp32)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=EXPORT_DIR",
                   help="an amqs export to benchmark (repeatable)")
    p.add_argument("--shape", action="append", type=parse_shape, default=None, metavar="BxT")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--eval", action="store_true", help="also report every model's dev accuracy")
    p.add_argument("--out", type=Path, default=Path("outputs/bench"),
                   help="folder of bench.csv/bench.md (default outputs/bench; the measured table: --out results)")
    p.add_argument("--work", type=Path, default=Path("exports/bench"), help="where the baselines are exported")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parser().parse_args(argv)
    models = {}
    for spec in args.model:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            parser().error(f"--model wants NAME=EXPORT_DIR, got {spec!r}")
        models[name] = Path(path)
    command = "amqs-bench " + " ".join(sys.argv[1:] if argv is None else argv)
    with user_errors("amqs-bench"):
        df = run_bench(args.fp32_run, models, out=args.out, work=args.work, shapes=args.shape or [(1, 128), (8, 128)],
                       threads=args.threads, warmup=args.warmup, rounds=args.rounds, evaluate=args.eval,
                       command=command)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
