"""Bit packing (NumPy) and the ONNX unpacking sub-graph of amqs.export.pack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from amqs.export.pack import GraphBuilder, emit_int8_matrix, emit_per_row, pack_codes, stored_rows, unpack_codes


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("k", [1, 3, 4, 5, 7, 8, 13])
def test_pack_unpack_round_trip(bits: int, k: int) -> None:
    rng = np.random.default_rng(k * 10 + bits)
    codes = rng.integers(0, 1 << bits, size=(5, k))
    packed = pack_codes(codes, bits)
    per = 8 // bits
    assert packed.dtype == np.uint8 and packed.shape == (5, -(-k // per))
    np.testing.assert_array_equal(unpack_codes(packed, bits, k), codes)


def test_packing_layout_is_little_end_first() -> None:
    # element j lives in byte j // per at bit offset (j % per) * bits
    assert pack_codes(np.array([[1, 2, 3, 0, 1]]), 2).tolist() == [[1 | 2 << 2 | 3 << 4 | 0 << 6, 1]]
    assert pack_codes(np.array([[0xA, 0x3, 0xF]]), 4).tolist() == [[0x3A, 0x0F]]
    # padding bits of the last byte are zero
    assert pack_codes(np.full((1, 5), 3), 2)[0, -1] == 3


def test_packed_byte_counts() -> None:
    codes = np.random.default_rng(0).integers(0, 4, size=(16, 128))
    int8_bytes = codes.astype(np.int8).nbytes
    assert pack_codes(codes, 2).nbytes == int8_bytes // 4
    assert pack_codes(codes, 4).nbytes == int8_bytes // 2
    # a row whose width is not a whole number of bytes is padded to the next byte only
    assert pack_codes(codes[:, :125], 2).nbytes == 16 * 32
    assert pack_codes(codes[:, :125], 4).nbytes == 16 * 63


@pytest.mark.parametrize("bits,bad", [(2, 4), (2, -1), (4, 16), (4, -1)])
def test_out_of_range_codes_raise(bits: int, bad: int) -> None:
    codes = np.zeros((2, 3), dtype=np.int64)
    codes[1, 2] = bad
    with pytest.raises(ValueError, match="out of range"):
        pack_codes(codes, bits)


def test_bad_bits_and_shape_raise() -> None:
    with pytest.raises(ValueError, match="bits must be one of"):
        pack_codes(np.zeros((2, 2)), 8)
    with pytest.raises(ValueError, match="2-D"):
        pack_codes(np.zeros(4), 2)
    with pytest.raises(ValueError, match=r"cannot store bit-widths \[1\]"):
        emit_int8_matrix(GraphBuilder(), "m", np.zeros((2, 3), np.uint8), np.array([8, 1]))


def test_stored_rows_groups_by_bits_stably() -> None:
    assert stored_rows(np.array([2, 8, 0, 4, 8, 2])).tolist() == [1, 4, 3, 0, 5, 2]


# rows deliberately not grouped by bit-width (a row permutation is needed); k = 7 is not a
# multiple of 4 (2-bit) nor 2 (4-bit), so the padding of the last byte must be sliced off
ROW_BITS = np.array([2, 8, 0, 4, 2, 8, 4, 0, 2, 4, 8, 2])
RUNS = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5])  # subgroups of two rows
K = 7


def _mixed_codes(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = np.stack([rng.integers(0, 1 << b, size=K) if b else np.zeros(K, np.int64) for b in ROW_BITS])
    codes[ROW_BITS == 8, 0] = 255  # extremes of the int8 container
    codes[ROW_BITS == 8, 1] = 0
    return codes.astype(np.uint8)


def _expected_int8(codes: np.ndarray) -> np.ndarray:
    want = codes.astype(np.int16)
    want[ROW_BITS == 8] -= 128
    want[ROW_BITS == 0] = 0
    return want.astype(np.int8)


def _unpack_model(codes: np.ndarray, scale_groups: np.ndarray, scales: np.ndarray) -> onnx.ModelProto:
    """A graph whose outputs depend on graph inputs (so ORT may only fold the unpacking part)."""
    g = GraphBuilder()
    w = emit_int8_matrix(g, "m", codes, ROW_BITS)
    s = emit_per_row(g, "m.scale", scales, scale_groups)
    g.nodes.append(helper.make_node("Add", [g.op("Cast", [w], to=TensorProto.FLOAT), "x"], ["w_out"]))
    g.nodes.append(helper.make_node("Mul", [s, "y"], ["s_out"]))
    n = len(ROW_BITS)
    graph = helper.make_graph(
        g.nodes, "unpack",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, K]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("w_out", TensorProto.FLOAT, [n, K]),
         helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [n])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, so: ort.SessionOptions | None = None) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    n = len(ROW_BITS)
    return sess.run(["w_out", "s_out"], {"x": np.zeros((n, K), np.float32), "y": np.ones(n, np.float32)})


@pytest.mark.parametrize("groups", [RUNS, np.arange(len(ROW_BITS)), np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])],
                         ids=["equal-runs", "per-row", "unequal-runs"])
def test_onnx_unpacking_reproduces_int8_matrix(groups: np.ndarray) -> None:
    codes = _mixed_codes()
    scales = np.repeat(np.linspace(0.5, 3.0, groups.max() + 1), np.bincount(groups)).astype(np.float32)
    model = _unpack_model(codes, groups, scales)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph itself, not folding
    w, s = _run(model, so)
    np.testing.assert_array_equal(w, _expected_int8(codes).astype(np.float32))
    np.testing.assert_array_equal(s, scales)
    stored = {t.name.rsplit("_", 1)[0]: t for t in model.graph.initializer}
    if groups is RUNS:  # one scale per run of equal rows, expanded in-graph
        assert onnx.numpy_helper.to_array(stored["m.scale"]).size == RUNS.max() + 1
    else:
        assert onnx.numpy_helper.to_array(stored["m.scale"]).size == len(ROW_BITS)


def test_onnx_unpacking_stores_packed_bits() -> None:
    codes = _mixed_codes()
    model = _unpack_model(codes, RUNS, np.ones(len(ROW_BITS), np.float32))
    arrays = {t.name.rsplit("_", 1)[0]: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert arrays["m.w8"].dtype == np.int8 and arrays["m.w8"].shape == ((ROW_BITS == 8).sum(), K)
    assert arrays["m.w4"].dtype == np.uint8 and arrays["m.w4"].shape == ((ROW_BITS == 4).sum(), 4)
    assert arrays["m.w2"].dtype == np.uint8 and arrays["m.w2"].shape == ((ROW_BITS == 2).sum(), 2)
    assert arrays["m.perm"].dtype == np.uint16


def test_grouped_rows_need_no_permutation() -> None:
    bits = np.array([8, 8, 4, 2, 0])
    g = GraphBuilder()
    emit_int8_matrix(g, "m", np.zeros((5, 3), np.uint8), bits)
    assert not any(n.op_type == "Gather" for n in g.nodes)
    assert not any(t.name.startswith("m.perm") for t in g.initializers)


def test_ort_constant_folds_the_unpacking(tmp_path: Path) -> None:
    codes = _mixed_codes(1)
    model = _unpack_model(codes, RUNS, np.ones(len(ROW_BITS), np.float32))
    assert sum(n.op_type == "BitShift" for n in model.graph.node) > 0  # there is something to fold
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    w, _ = _run(model, so)
    np.testing.assert_array_equal(w, _expected_int8(codes).astype(np.float32))
    folded = onnx.load(str(tmp_path / "optimized.onnx"))
    ops = {n.op_type for n in folded.graph.node}
    assert not ops & {"BitShift", "BitwiseAnd", "Concat", "Gather", "ConstantOfShape", "Expand"}, ops


def test_row_permutation_is_stored_per_block_when_bits_come_in_blocks() -> None:
    """A searched embedding table: bits constant over blocks of 3 rows -> one permutation entry per block."""
    rng = np.random.default_rng(4)
    bits = np.repeat(rng.choice([2, 4, 8], size=10), 3)
    codes = np.stack([rng.integers(0, 1 << b, size=K) for b in bits]).astype(np.uint8)
    g = GraphBuilder()
    w = emit_int8_matrix(g, "m", codes, bits)
    g.nodes.append(helper.make_node("Cast", [w], ["w_out"], to=TensorProto.FLOAT))
    graph = helper.make_graph(g.nodes, "perm", [], [helper.make_tensor_value_info("w_out", TensorProto.FLOAT,
                                                                                  [len(bits), K])], g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    perm = {t.name.rsplit("_", 1)[0]: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}["m.perm"]
    assert perm.dtype == np.uint16 and perm.size == 10
    out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["w_out"], {})[0]
    want = codes.astype(np.int16)
    want[bits == 8] -= 128
    np.testing.assert_array_equal(out, want.astype(np.float32))
