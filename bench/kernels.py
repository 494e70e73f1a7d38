"""Which ONNX Runtime CPU kernel should a 2/4/8-bit Linear use? Measured, per matrix shape.

For MiniLM's Linear shapes ([384->384], [384->1536], [1536->384]) at 1x128 and 8x128 tokens, times
(interleaved rounds, one thread) a float MatMul, the int8 GEMM amqs exports
(QuantizeLinear + MatMulIntegerToFloat, static activation range), ORT's dynamic int8
(DynamicQuantizeMatMul, what quantize_dynamic produces) and MatMulNBits with 4-bit and 2-bit weights
(block size 32; accuracy_level 4 = int8 activations, the fastest documented mode), and writes
results/kernels.{csv,md}. A kernel that ORT cannot build on this machine is reported as such.

    python bench/kernels.py --threads 1 --rounds 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from amqs.bench import time_interleaved  # noqa: E402
from amqs.report.tables import to_markdown  # noqa: E402
from amqs.runtime import session_options  # noqa: E402
from amqs.utils.provenance import cpu_name  # noqa: E402

SHAPES = [(384, 384), (384, 1536), (1536, 384)]


def model(nodes, inits, k, n):
    g = helper.make_graph(nodes, "k", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
                          [numpy_helper.from_array(v, name) for name, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])


def kernels(k: int, n: int, rng) -> dict:
    w = rng.standard_normal((k, n)).astype(np.float32) * 0.05
    out = {"fp32 MatMul": model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"w": w}, k, n)}
    b = rng.integers(-128, 127, (k, n)).astype(np.int8)
    common = {"b": b, "bs": np.full(n, 1e-3, np.float32), "bz": np.zeros(n, np.int8)}
    out["int8 static (amqs)"] = model([
        helper.make_node("QuantizeLinear", ["x", "as", "az"], ["xq"]),
        helper.make_node("MatMulIntegerToFloat", ["xq", "b", "as", "bs", "az", "bz"], ["y"], domain="com.microsoft")],
        {**common, "as": np.array(0.02, np.float32), "az": np.array(128, np.uint8)}, k, n)
    out["int8 dynamic (ORT)"] = model([
        helper.make_node("DynamicQuantizeMatMul", ["x", "b", "bs", "bz"], ["y"], domain="com.microsoft")],
        common, k, n)
    for bits in (4, 2):
        block = 32
        blob = rng.integers(0, 256, (n, k // block, block * bits // 8)).astype(np.uint8)
        scales = np.full(n * (k // block), 1e-3, np.float32)
        out[f"MatMulNBits {bits}-bit"] = model([helper.make_node(
            "MatMulNBits", ["x", "q", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=bits, block_size=block,
            accuracy_level=4)], {"q": blob, "s": scales}, k, n)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("results"))
    args = p.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for k, n in SHAPES:
        for tokens in (128, 1024):
            x = rng.standard_normal((tokens, k)).astype(np.float32)
            runners, failed = {}, {}
            for name, m in kernels(k, n, rng).items():
                try:
                    s = ort.InferenceSession(m.SerializeToString(), session_options(args.threads),
                                             providers=["CPUExecutionProvider"])
                    s.run(None, {"x": x})
                    runners[name] = (lambda s=s: s.run(None, {"x": x}))
                except Exception as e:  # reported, not hidden
                    failed[name] = f"{type(e).__name__}: {str(e)[:80]}"
            times = time_interleaved(runners, args.warmup, args.rounds)
            ref = float(np.median(times["fp32 MatMul"]))
            for name, t in times.items():
                med = float(np.median(t))
                rows.append({"k": k, "n": n, "tokens": tokens, "kernel": name, "p50_us": round(1e6 * med, 1),
                             "speedup_vs_fp32": round(ref / med, 2), "note": ""})
            rows += [{"k": k, "n": n, "tokens": tokens, "kernel": name, "p50_us": None, "speedup_vs_fp32": None,
                      "note": msg} for name, msg in failed.items()]
    df = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "kernels.csv", index=False)
    notes = [f"Command: `python bench/kernels.py --threads {args.threads} --rounds {args.rounds}`",
             "", f"CPU: {cpu_name()}; ONNX Runtime {ort.__version__}; {args.threads} thread(s); one Linear "
             "[tokens, k] x [k, n], interleaved rounds, p50. tokens 128 = batch 1 x 128, 1024 = batch 8 x 128."]
    (args.out / "kernels.md").write_text(to_markdown(df, "ONNX Runtime CPU kernels for quantized Linears", notes))
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
