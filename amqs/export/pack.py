"""Bit-packing of integer weight codes, in NumPy and as an ONNX unpacking sub-graph.

A matrix whose rows (output neurons) carry different bit-widths is stored as one initializer per
bit-width: 8-bit rows as ``int8`` (code - 128), 4-bit rows two codes per byte, 2-bit rows four per
byte (``uint8``); pruned rows that the structure does not allow to remove store nothing (zeros are
generated). When the rows are not already grouped by bit-width, a ``uint16`` row permutation puts
them back in order. Every unpacking node depends on initializers only, so ONNX Runtime folds the
whole sub-graph into one ``int8`` matrix when the session is created: the file holds the packed
bits, the kernels see int8 (the int8 GEMM is the fast one on this CPU; see the README).

Packing layout (little-end first): element ``j`` of a row lives in byte ``j // per`` at bit offset
``(j % per) * bits``, ``per = 8 // bits``; a row is padded with zeros to a whole number of bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto, helper, numpy_helper

PACKED_BITS = (2, 4)        # stored several codes per byte
STORED_BITS = (0, 2, 4, 8)  # what the exporter can store (0 = a row of zeros, nothing stored)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned ``codes[n, k]`` (each ``< 2**bits``) into ``uint8[n, ceil(k * bits / 8)]``.

    Example:
        >>> pack_codes(np.array([[1, 2, 3, 0, 1]]), 2).tolist()
        [[57, 1]]
    """
    if bits not in PACKED_BITS:
        raise ValueError(f"pack_codes: bits must be one of {PACKED_BITS}, got {bits}")
    c = np.asarray(codes)
    if c.ndim != 2:
        raise ValueError(f"pack_codes: expected a 2-D code matrix, got shape {c.shape}")
    if c.size and (c.min() < 0 or c.max() >= 1 << bits):
        raise ValueError(f"pack_codes: codes out of range [0, {(1 << bits) - 1}] for {bits} bits")
    per = 8 // bits
    n, k = c.shape
    padded = np.zeros((n, -(-k // per) * per), dtype=np.uint8)
    padded[:, :k] = c
    grouped = padded.reshape(n, -1, per).astype(np.uint16)
    shifts = (np.arange(per, dtype=np.uint16) * bits)[None, None, :]
    return (grouped << shifts).sum(axis=2).astype(np.uint8)


def unpack_codes(packed: np.ndarray, bits: int, k: int) -> np.ndarray:
    """Inverse of :func:`pack_codes` (returns ``uint8[n, k]``).

    Example:
        >>> unpack_codes(pack_codes(np.array([[1, 2, 3, 0, 1]]), 2), 2, 5).tolist()
        [[1, 2, 3, 0, 1]]
    """
    per = 8 // bits
    shifts = (np.arange(per, dtype=np.uint8) * bits)[None, None, :]
    out = (packed[:, :, None] >> shifts) & np.uint8((1 << bits) - 1)
    return out.reshape(packed.shape[0], -1)[:, :k].astype(np.uint8)


@dataclass
class GraphBuilder:
    """Collects ONNX nodes and initializers with unique names."""

    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    _count: int = 0
    _small: dict = field(default_factory=dict)  # (dtype, shape, bytes) -> name of a shared small constant

    def name(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def const(self, base: str, value: np.ndarray) -> str:
        """An initializer holding ``value``; small constants (shapes, axes, scalars) are stored once."""
        value = np.ascontiguousarray(value)
        key = (value.dtype.str, value.shape, value.tobytes()) if value.size <= 16 else None
        if key is not None and key in self._small:
            return self._small[key]
        n = self.name(base)
        self.initializers.append(numpy_helper.from_array(value, n))
        if key is not None:
            self._small[key] = n
        return n

    def op(self, op_type: str, inputs: list[str], base: str | None = None, *, domain: str = "",
           **attrs) -> str:
        out = self.name(base or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, domain=domain or None, **attrs))
        return out


def stored_rows(bits: np.ndarray) -> np.ndarray:
    """Row order of the stored matrix: rows grouped by bit-width 8, 4, 2, then 0 (stable)."""
    rank = {8: 0, 4: 1, 2: 2, 0: 3}
    key = np.array([rank[int(b)] for b in bits], dtype=np.int64)
    return np.argsort(key, kind="stable")


def emit_int8_matrix(g: GraphBuilder, base: str, codes: np.ndarray, bits: np.ndarray) -> str:
    """Store ``codes[n, k]`` (unsigned, row ``i`` in ``[0, 2**bits[i])``) packed; return the name
    of an ``int8[n, k]`` tensor equal to ``codes - 128`` on 8-bit rows, ``codes`` on 2/4-bit rows
    and 0 on 0-bit rows (the matching zero points are shifted the same way by the caller)."""
    n, k = codes.shape
    bits = np.asarray(bits, dtype=np.int64)
    bad = sorted(set(bits.tolist()) - set(STORED_BITS))
    if bad:
        raise ValueError(f"{base}: cannot store bit-widths {bad}; the exporter stores {STORED_BITS}")
    order = stored_rows(bits)
    parts = []
    for b in (8, 4, 2):
        rows = order[bits[order] == b]
        if not len(rows):
            continue
        block = codes[rows]
        if b == 8:
            parts.append(g.const(f"{base}.w8", (block.astype(np.int16) - 128).astype(np.int8)))
            continue
        packed = g.const(f"{base}.w{b}", pack_codes(block, b))
        per = 8 // b
        pieces = []
        for s in range(per):
            shifted = g.op("BitShift", [packed, g.const(f"{base}.shift", np.array(s * b, np.uint8))],
                           direction="RIGHT") if s else packed
            masked = g.op("BitwiseAnd", [shifted, g.const(f"{base}.mask", np.array((1 << b) - 1, np.uint8))])
            pieces.append(g.op("Unsqueeze", [masked, g.const(f"{base}.ax", np.array([2], np.int64))]))
        stacked = g.op("Concat", pieces, axis=2)
        flat = g.op("Reshape", [stacked, g.const(f"{base}.shape", np.array([len(rows), -1], np.int64))])
        if -(-k // per) * per != k:  # drop the padding of the last byte
            flat = g.op("Slice", [flat, g.const(f"{base}.st", np.array([0], np.int64)),
                                  g.const(f"{base}.en", np.array([k], np.int64)),
                                  g.const(f"{base}.axes", np.array([1], np.int64))])
        parts.append(g.op("Cast", [flat], to=TensorProto.INT8))
    zero_rows = int((bits == 0).sum())
    if zero_rows:
        parts.append(g.op("ConstantOfShape", [g.const(f"{base}.zshape", np.array([zero_rows, k], np.int64))],
                          value=helper.make_tensor("v", TensorProto.INT8, [1], [0])))
    full = parts[0] if len(parts) == 1 else g.op("Concat", parts, axis=0)
    if not np.array_equal(order, np.arange(n)):
        full = g.op("Gather", [full, _row_permutation(g, base, order)], axis=0)
    return full


def _row_permutation(g: GraphBuilder, base: str, order: np.ndarray) -> str:
    """The int64 inverse of ``order`` (stored row -> original row), stored per block of rows when the bit-widths
    come in runs whose lengths share a divisor (a searched table's blocks: 5,087 entries instead of 30,522), as
    uint16 where it fits, else uint32."""
    n = len(order)
    starts = np.flatnonzero(np.r_[True, np.diff(order) != 1])  # runs the stable sort moved together
    block = int(np.gcd.reduce(np.diff(np.r_[starts, n])))
    blocks = order[::block] // block  # whole blocks move: order = blocks * block + [0, block)
    inverse = np.empty(len(blocks), dtype=np.uint16 if len(blocks) < 1 << 16 else np.uint32)
    inverse[blocks] = np.arange(len(blocks))
    idx = g.op("Cast", [g.const(f"{base}.perm", inverse)], to=TensorProto.INT64)
    if block == 1:
        return idx
    rows = g.op("Add", [g.op("Mul", [g.op("Unsqueeze", [idx, g.const(f"{base}.ax1", np.array([1], np.int64))]),
                                       g.const(f"{base}.block", np.array(block, np.int64))]),
                        g.const(f"{base}.within", np.arange(block, dtype=np.int64))])
    return g.op("Reshape", [rows, g.const(f"{base}.rows", np.array([n], np.int64))])


def emit_per_row(g: GraphBuilder, base: str, values: np.ndarray, groups: np.ndarray) -> str:
    """Store a per-row vector that is constant over runs of rows (``groups`` = run id per row) once
    per run, expanded back to rows in-graph when all runs are equally long; per row otherwise."""
    values = np.asarray(values)
    n = len(values)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    lengths = np.diff(np.r_[starts, n])
    if len(starts) < n and (lengths == lengths[0]).all():
        per_run = values[starts]
        stored = g.const(base, per_run.reshape(-1, 1))
        expanded = g.op("Expand", [stored, g.const(f"{base}.exp", np.array([len(starts), lengths[0]], np.int64))])
        return g.op("Reshape", [expanded, g.const(f"{base}.flat", np.array([n], np.int64))])
    return g.const(base, values)
