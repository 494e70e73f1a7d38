"""Write :class:`~amqs.export.materialize.BertArrays` as an ONNX model for ONNX Runtime's CPU provider.

Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 ``[batch, length]``, both
dynamic); output ``logits`` (float ``[batch, num_labels]``). The graph is HF BERT's computation
(absolute positions, post-LayerNorm, erf GELU, additive ``finfo(float32).min`` mask, tanh pooler), with the
family's differences (:mod:`amqs.models.family`): RoBERTa's positions count the non-padding ids from
``pad_token_id + 1`` and its head is dense + tanh + out_proj; DistilBERT has no token types (the
``token_type_ids`` input is kept, so every export takes the same inputs, and ignored) and a ReLU head.
Node and initializer names are the model's own module names.

A quantized Linear with a static input quantizer becomes ``QuantizeLinear`` (its trained range) ->
``com.microsoft.MatMulIntegerToFloat`` (u8 x s8 integer GEMM, per-output-channel scales and zero
points, bias fused); its weight is stored packed at its bit-width (:mod:`amqs.export.pack`) and
unpacked by constant folding when the session starts. A quantized Linear without an input
quantizer (weight-only quantization) and an fp32 Linear use a float ``MatMul`` (the former's
weight still stored packed). Quantized embedding tables are stored as codes and dequantized by
constant folding.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper

from amqs.export.materialize import BertArrays, Layer, Matrix
from amqs.models.family import family_named
from amqs.export.pack import GraphBuilder, emit_int8_matrix, emit_per_row

OPSET = 18
MS_DOMAIN = "com.microsoft"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _int8_zero_points(m: Matrix) -> np.ndarray:
    """Zero points in the int8 container: 8-bit rows are stored as ``code - 128``."""
    return (m.zero_point - 128 * (m.bits == 8)).astype(np.int8)


def _int8_weight(g: GraphBuilder, m: Matrix) -> tuple[str, str, str]:
    """The stored int8 codes ``[rows, cols]`` and their per-row zero points and scales."""
    return (emit_int8_matrix(g, m.name, m.codes, m.bits),
            emit_per_row(g, m.name + ".zero_point", _int8_zero_points(m), m.group),
            emit_per_row(g, m.name + ".scale", m.scale, m.group))


def _float_weight(g: GraphBuilder, m: Matrix) -> str:
    """An fp32 ``[rows, cols]`` tensor: the initializer itself, or dequantized packed codes."""
    if not m.quantized:
        return g.const(m.name + ".weight", m.weight.astype(np.float32))
    codes, zp, scale = _int8_weight(g, m)
    shifted = g.op("Sub", [g.op("Cast", [codes], to=TensorProto.FLOAT),
                           g.op("Unsqueeze", [g.op("Cast", [zp], to=TensorProto.FLOAT),
                                              g.const("axis1", np.array([1], np.int64))])])
    return g.op("Mul", [shifted, g.op("Unsqueeze", [scale, g.const("axis1", np.array([1], np.int64))])])


def linear(g: GraphBuilder, x: str, m: Matrix) -> str:
    """``x @ W.T + b`` for a Matrix (integer kernels where the matrix has an input quantizer)."""
    bias = g.const(m.name + ".bias", m.bias.astype(np.float32)) if m.bias is not None else None
    if m.quantized and m.act is not None:
        a = m.act
        a_scale = g.const(m.name + ".in_scale", np.array(a.scale, np.float32))
        a_zp = g.const(m.name + ".in_zero_point", np.array(a.zero_point, np.int8 if a.signed else np.uint8))
        container = (-128, 127) if a.signed else (0, 255)
        if (a.qmin, a.qmax) != container:  # fewer than 8 bits: clip to the quantizer's own range
            lo, hi = ((q - a.zero_point) * a.scale for q in (a.qmin, a.qmax))
            x = g.op("Clip", [x, g.const("lo", np.array(lo, np.float32)), g.const("hi", np.array(hi, np.float32))])
        xq = g.op("QuantizeLinear", [x, a_scale, a_zp], m.name + ".in_q")
        codes, b_zp, b_scale = _int8_weight(g, m)
        b = g.op("Transpose", [codes], perm=[1, 0])
        inputs = [xq, b, a_scale, b_scale, a_zp, b_zp] + ([bias] if bias else [])
        return g.op("MatMulIntegerToFloat", inputs, m.name, domain=MS_DOMAIN)
    wt = (g.op("Transpose", [_float_weight(g, m)], perm=[1, 0]) if m.quantized
          else g.const(m.name + ".weight_t", m.weight.T.copy()))
    y = g.op("MatMul", [x, wt], m.name)
    return g.op("Add", [y, bias]) if bias else y


def layer_norm(g: GraphBuilder, x: str, norm: tuple[np.ndarray, np.ndarray], eps: float, name: str) -> str:
    return g.op("LayerNormalization", [x, g.const(name + ".weight", norm[0]), g.const(name + ".bias", norm[1])],
                name, axis=-1, epsilon=eps)


def activation(g: GraphBuilder, x: str, kind: str) -> str:
    if kind == "relu":
        return g.op("Relu", [x])
    if kind == "tanh":
        return g.op("Tanh", [x])
    # exact (erf) GELU, as HF's "gelu"; ORT fuses this pattern into its Gelu kernel
    inner = g.op("Erf", [g.op("Div", [x, g.const("sqrt2", np.array(math.sqrt(2.0), np.float32))])])
    one_plus = g.op("Add", [inner, g.const("one", np.array(1.0, np.float32))])
    return g.op("Mul", [g.op("Mul", [x, one_plus]), g.const("half", np.array(0.5, np.float32))])


def attention(g: GraphBuilder, x: str, mask: str, layer: Layer, prefix: str) -> Optional[str]:
    """Multi-head self-attention context ``[B, T, heads*head_dim]``; None when every head is removed."""
    h, d = layer.num_heads, layer.head_dim
    if h == 0:
        return None
    split = g.const("heads_shape", np.array([0, 0, h, d], np.int64))
    q = g.op("Transpose", [g.op("Reshape", [linear(g, x, layer.query), split])], perm=[0, 2, 1, 3])
    k = g.op("Transpose", [g.op("Reshape", [linear(g, x, layer.key), split])], perm=[0, 2, 3, 1])
    v = g.op("Transpose", [g.op("Reshape", [linear(g, x, layer.value), split])], perm=[0, 2, 1, 3])
    scores = g.op("Mul", [g.op("MatMul", [q, k]), g.const("inv_sqrt_d", np.array(1.0 / math.sqrt(d), np.float32))])
    probs = g.op("Softmax", [g.op("Add", [scores, mask])], prefix + "attention.probs", axis=-1)
    ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    return g.op("Reshape", [ctx, g.const("merge_shape", np.array([0, 0, h * d], np.int64))])


def constant_output(g: GraphBuilder, like: str, m: Matrix) -> str:
    """A matrix whose every input column was removed outputs its (folded) bias at every position."""
    return g.op("Add", [g.op("Mul", [like, g.const("zero", np.array(0.0, np.float32))]),
                        g.const(m.name + ".bias", m.bias.astype(np.float32))])


def embeddings(g: GraphBuilder, arrays: BertArrays, name: str) -> str:
    """Word + position (+ token type) embeddings, LayerNorm-ed: ``[B, T, hidden]``."""
    ids, _, types = INPUTS
    word = g.op("Gather", [_float_weight(g, arrays.word), ids], axis=0)
    if arrays.position_offset is None:
        # positions 0..T-1: the first T rows of the position table (a Slice with a 1-D end; a
        # Gather over Range(0, T) is what ORT 1.32's GatherToSliceFusion mis-rewrites)
        seq_len = g.op("Slice", [g.op("Shape", [ids]), g.const("one_1d", np.array([1], np.int64)),
                                 g.const("two_1d", np.array([2], np.int64))])
        pos = g.op("Slice", [_float_weight(g, arrays.position), g.const("zero_1d", np.array([0], np.int64)), seq_len,
                             g.const("zero_1d", np.array([0], np.int64))])
    else:  # RoBERTa: pad + cumsum(ids != pad) at real tokens, pad at padding
        pad = g.const("pad_id", np.array(arrays.position_offset, np.int64))
        real = g.op("Cast", [g.op("Not", [g.op("Equal", [ids, pad])])], to=TensorProto.INT64)
        count = g.op("CumSum", [real, g.const("axis1_scalar", np.array(1, np.int64))])
        pos = g.op("Gather", [_float_weight(g, arrays.position), g.op("Add", [g.op("Mul", [count, real]), pad])],
                   axis=0)
    x = g.op("Add", [word, pos])
    if arrays.token_type is not None:
        x = g.op("Add", [x, g.op("Gather", [_float_weight(g, arrays.token_type), types], axis=0)])
    return layer_norm(g, x, arrays.emb_norm, arrays.eps, name)


def build_model(arrays: BertArrays, *, producer: str = "amqs", doc: str = "") -> onnx.ModelProto:
    """The ONNX model of ``arrays`` (see the module docstring)."""
    g = GraphBuilder()
    family = family_named(arrays.model_type)
    _, mask_in, _ = INPUTS
    x = embeddings(g, arrays, family.own("bert.embeddings.LayerNorm"))
    # HF's extended mask: 0 where attended, finfo(float32).min where masked, shape [B, 1, 1, T]
    keep = g.op("Cast", [g.op("Unsqueeze", [mask_in, g.const("axes12", np.array([1, 2], np.int64))])],
                to=TensorProto.FLOAT)
    mask = g.op("Mul", [g.op("Sub", [g.const("one", np.array(1.0, np.float32)), keep]),
                        g.const("neg", np.array(np.finfo(np.float32).min, np.float32))])
    for i, layer in enumerate(arrays.layers):
        p = family.own(f"bert.encoder.layer.{i}") + "."
        ctx = attention(g, x, mask, layer, p)
        att = constant_output(g, x, layer.attn_out) if ctx is None else linear(g, ctx, layer.attn_out)
        x = layer_norm(g, g.op("Add", [att, x]), layer.attn_norm, arrays.eps,
                       family.layer_module(i, "attention.output.LayerNorm"))
        if layer.inter.shape[0] == 0:
            ffn = constant_output(g, x, layer.out)
        else:
            ffn = linear(g, activation(g, linear(g, x, layer.inter), arrays.hidden_act), layer.out)
        x = layer_norm(g, g.op("Add", [ffn, x]), layer.out_norm, arrays.eps, family.layer_module(i, "output.LayerNorm"))
    ax1 = g.const("axis1", np.array([1], np.int64))
    first = g.op("Squeeze", [g.op("Slice", [x, g.const("start", np.array([0], np.int64)),
                                            g.const("end", np.array([1], np.int64)), ax1]), ax1])
    pooled = activation(g, linear(g, first, arrays.pooler), arrays.head_act)
    logits = linear(g, pooled, arrays.classifier)
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
    num_labels = arrays.classifier.shape[0]
    graph = helper.make_graph(
        g.nodes, f"amqs_{arrays.model_type}",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "length"]) for n in INPUTS],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_labels])],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
                              producer_name=producer, doc_string=doc)
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model
