"""amqs-bench (amqs.bench) on the tiny exports of test_runtime.py."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from amqs.bench import BENCH_COLUMNS, main as bench_main, parse_shape, quantize_int8_dynamic, run_bench, time_interleaved
from amqs.runtime import EXPORT_FILE, MODEL_FILE, ExportedModel, read_export_meta
from tests.test_runtime import TinyExports, tiny_exports


@pytest.fixture
def tiny(tmp_path_factory: pytest.TempPathFactory, glue_dir: Path) -> TinyExports:
    return tiny_exports(tmp_path_factory, glue_dir)


@pytest.mark.parametrize("text,shape", [("8x128", (8, 128)), ("1X64", (1, 64)), (" 2x16 ", (2, 16))])
def test_parse_shape(text: str, shape: tuple[int, int]) -> None:
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["8", "8x", "x128", "8x128x2", "8*128", "axb", ""])
def test_parse_shape_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="shape must look like 8x128"):
        parse_shape(text)


def test_bad_shape_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        bench_main(["--fp32-run", "x", "--shape", "8by128"])
    assert e.value.code == 2 and "shape must look like 8x128" in capsys.readouterr().err


def test_bad_model_spec_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        bench_main(["--fp32-run", "x", "--model", "just-a-dir"])
    assert e.value.code == 2 and "--model wants NAME=EXPORT_DIR, got 'just-a-dir'" in capsys.readouterr().err


def test_time_interleaved_order_and_counts() -> None:
    calls: list[str] = []

    def runner(name: str, sleep: float = 0.0):
        def run() -> None:
            calls.append(name)
            if sleep:
                time.sleep(sleep)
        return run

    times = time_interleaved({"a": runner("a"), "b": runner("b", 0.002), "c": runner("c")}, warmup=2, rounds=3)
    assert calls == ["a", "a", "b", "b", "c", "c"] + ["a", "b", "c"] * 3
    assert list(times) == ["a", "b", "c"] and all(len(t) == 3 for t in times.values())
    assert min(times["b"]) >= 0.002  # each entry times its own runner


def test_time_interleaved_without_warmup() -> None:
    calls: list[str] = []
    times = time_interleaved({"x": lambda: calls.append("x")}, warmup=0, rounds=4)
    assert calls == ["x"] * 4 and len(times["x"]) == 4 and all(t >= 0 for t in times["x"])


def test_quantize_int8_dynamic(tiny: TinyExports, tmp_path: Path) -> None:
    fp32 = Path(shutil.copytree(tiny.fp32_export, tmp_path / "fp32"))
    before = sorted(p.name for p in fp32.iterdir())
    out = quantize_int8_dynamic(fp32, tmp_path / "int8")
    assert sorted(p.name for p in fp32.iterdir()) == before  # the fp32 folder is left alone
    assert sorted(p.name for p in out.iterdir()) == before
    meta = read_export_meta(out)
    assert meta["file_bytes"] == (out / MODEL_FILE).stat().st_size < 0.5 * (fp32 / MODEL_FILE).stat().st_size
    assert "quantize_dynamic" in meta["onnxruntime_ops"]
    assert meta["task"] == read_export_meta(fp32)["task"]
    ops = {n.op_type for n in onnx.load(str(out / MODEL_FILE)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & ops or "DynamicQuantizeMatMul" in ops, ops
    texts = ["a gripping , funny film", "dull", "the plot goes nowhere"]
    q = ExportedModel(out).predict_logits(texts)
    f = ExportedModel(fp32).predict_logits(texts)
    assert q.shape == (3, 2) and np.isfinite(q).all()
    np.testing.assert_allclose(q, f, rtol=0, atol=0.05 * float(np.abs(f).max()))  # int8 is close, not equal


def test_run_bench(tiny: TinyExports, tmp_path: Path) -> None:
    df = run_bench(tiny.fp32_run, {"mixed": tiny.quant_export}, out=tmp_path / "out", work=tmp_path / "work",
                   shapes=[(1, 8), (2, 16)], threads=1, warmup=1, rounds=2, evaluate=True, command="amqs-bench test")
    csv_df = pd.read_csv(tmp_path / "out" / "bench.csv")
    assert list(csv_df.columns) == list(BENCH_COLUMNS)
    assert csv_df["model"].tolist() == ["pytorch-fp32", "ort-fp32", "ort-int8-dynamic", "mixed"] * 2
    assert list(zip(csv_df["batch"], csv_df["length"])) == [(1, 8)] * 4 + [(2, 16)] * 4
    assert (csv_df["runtime"] == np.where(csv_df["model"] == "pytorch-fp32", "pytorch", "onnxruntime")).all()
    ref_fp32, ref_int8 = csv_df[csv_df["model"] == "ort-fp32"], csv_df[csv_df["model"] == "ort-int8-dynamic"]
    assert (ref_fp32["speedup_vs_ort_fp32"] == 1.0).all() and (ref_int8["speedup_vs_ort_int8"] == 1.0).all()
    assert (csv_df[["p50_ms", "p90_ms", "mean_ms"]] > 0).all().all()
    assert (csv_df["p90_ms"] >= csv_df["p50_ms"]).all()
    # file sizes from each export's export.json; the mixed export is the one given
    mixed = json.loads((tiny.quant_export / EXPORT_FILE).read_text())
    assert (csv_df.loc[csv_df["model"] == "mixed", "file_bytes"] == mixed["file_bytes"]).all()
    int8 = read_export_meta(tmp_path / "work" / "ort-int8-dynamic")
    assert (ref_int8["file_bytes"] == int8["file_bytes"]).all()
    assert csv_df.loc[csv_df["model"] == "pytorch-fp32", "file_bytes"].isna().all()
    # dev accuracy of every exported model (--eval), none for the PyTorch row
    acc = csv_df.set_index("model")["dev_accuracy"]
    assert acc[["ort-fp32", "ort-int8-dynamic", "mixed"]].between(0, 1).all() and acc[["pytorch-fp32"]].isna().all()
    assert acc["mixed"].iloc[0] == pytest.approx(tiny.quant_facts["dev_accuracy_exported"])
    md = (tmp_path / "out" / "bench.md").read_text()
    assert "amqs-bench test" in md and "mixed" in md
    assert len(df) == 8


def test_run_bench_wants_the_fp32_run(tiny: TinyExports, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a quantized run"):
        run_bench(tiny.quant_run, {}, out=tmp_path / "o", work=tmp_path / "w", shapes=[(1, 8)], threads=1, warmup=0,
                  rounds=1, evaluate=False, command="")


@pytest.mark.parametrize("text", ["0x128", "-1x8", "8x0"])
def test_parse_shape_rejects_non_positive(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="must be positive"):
        parse_shape(text)
