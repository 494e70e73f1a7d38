"""amqs.export.graph: the ONNX model of a (fake-)quantized tiny BERT, run in ONNX Runtime.

Parity is checked against the fake-quantized PyTorch model on the same inputs. The exporter
reproduces the fake-quant arithmetic exactly (same codes, scales, activation ranges), so the
only differences are float summation order and ORT's own kernels: ~1e-7 relative. An activation
value that sits on a rounding tie may still land on the other quantization level in one runtime
(a one-level "flip"); with the models below none does, and a real bug (a wrong fold, code, zero
point, row order) moves logits by 1e-2 or more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from amqs.export.graph import build_model
from amqs.export.materialize import materialize
from amqs.models.family import uses_token_types
from amqs.quant import DEFAULT_LINEAR_PATTERNS, ActQuant, apply_assignment, model_size, uniform_assignment
from tests.export.test_materialize import calibrate, mixed_bits, prune_heads, quant_bert, randomize
from tests.tiny import batch, tiny_bert, tiny_model

REL_TOL = 1e-4  # of the largest |logit|; observed differences are ~1e-7 of it


def session(model: torch.nn.Module, path: Path | None = None, **kw) -> ort.InferenceSession:
    proto = build_model(materialize(model, **kw))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if path is not None:
        onnx.save(proto, str(path))
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def inputs(seed: int = 7, n: int = 4, length: int = 10) -> dict[str, np.ndarray]:
    """Random ids with padding (attention mask 0) and both token types."""
    b = batch(seed, n, length)
    b.pop("labels")
    b["attention_mask"][min(1, n - 1), length // 2:] = 0
    if n > 2:
        b["attention_mask"][n - 1, 3:] = 0
    b["token_type_ids"] = torch.zeros_like(b["input_ids"])
    b["token_type_ids"][:, length // 2:] = 1
    return {k: v.numpy() for k, v in b.items()}


def family_inputs(model_type: str, seed: int = 7, n: int = 4, length: int = 10) -> dict[str, np.ndarray]:
    """:func:`inputs` as a tokenizer of the family gives them: padding holds the pad id (RoBERTa's positions skip
    it), and no second token type (RoBERTa has one, DistilBERT none: its graph ignores the input)."""
    feed = inputs(seed, n, length)
    feed["input_ids"][feed["attention_mask"] == 0] = 1 if model_type == "roberta" else 0
    feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
    return feed


def torch_logits(model: torch.nn.Module, feed: dict[str, np.ndarray]) -> np.ndarray:
    types = uses_token_types(model.config)  # a model without token types takes no token_type_ids
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in feed.items()
                        if k != "token_type_ids" or types}).logits.numpy()


def assert_parity(sess: ort.InferenceSession, model: torch.nn.Module, feed: dict[str, np.ndarray]) -> np.ndarray:
    ref = torch_logits(model, feed)
    got = sess.run(["logits"], feed)[0]
    assert got.shape == ref.shape
    scale = float(np.abs(ref).max())
    # the logits depend on the input (a constant output would make parity meaningless)
    assert scale > 0.3, ref
    assert len(ref) == 1 or float(np.ptp(ref, axis=0).max()) > 0.05 * scale, ref
    np.testing.assert_allclose(got, ref, rtol=0, atol=REL_TOL * scale)
    return got


def test_mixed_bits_match_fake_quant_with_padding() -> None:
    model = quant_bert(0, mixed_bits(0))
    feed = inputs()
    got = assert_parity(session(model), model, feed)
    # padding is really masked: changing a padded token does not change that row's logits
    other = {k: v.copy() for k, v in feed.items()}
    other["input_ids"][1, -1] = (other["input_ids"][1, -1] + 1) % 100
    again = session(model).run(["logits"], other)[0]
    np.testing.assert_allclose(again[1], got[1], rtol=0, atol=1e-6)
    # ... while changing an attended one does
    other["input_ids"][1, 1] = (other["input_ids"][1, 1] + 1) % 100
    assert np.abs(session(model).run(["logits"], other)[0][1] - got[1]).max() > 1e-4


def test_graph_uses_integer_kernels_on_packed_weights() -> None:
    model = quant_bert(0, mixed_bits(0))
    proto = build_model(materialize(model))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MatMulIntegerToFloat") == 12 and ops.count("QuantizeLinear") == 12
    names = [t.name for t in proto.graph.initializer]
    assert any(".w2_" in n for n in names) and any(".w4_" in n for n in names) and any(".w8_" in n for n in names)


def test_ort_folds_the_unpacking_of_the_whole_model(tmp_path: Path) -> None:
    model = quant_bert(1, mixed_bits(1))
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    proto = build_model(materialize(model))
    assert any(n.op_type == "BitShift" for n in proto.graph.node)
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    assert_parity(sess, model, inputs())
    folded = onnx.load(str(tmp_path / "opt.onnx"))
    assert not any(n.op_type in ("BitShift", "BitwiseAnd") for n in folded.graph.node)
    weights = {n.input[1] for n in folded.graph.node if n.op_type == "MatMulIntegerToFloat"}
    dtypes = {t.data_type for t in folded.graph.initializer if t.name in weights}
    assert len(weights) == 12 and dtypes == {onnx.TensorProto.INT8}


def test_removed_heads_and_neurons_keep_the_output() -> None:
    model = quant_bert(2, prune_heads(mixed_bits(2), {0: [1, 3], 1: [2]}))
    arrays = materialize(model)
    assert [ly.num_heads for ly in arrays.layers] == [2, 3]
    assert all(ly.removed_neurons > 0 for ly in arrays.layers)
    feed = inputs(3)
    removed = assert_parity(session(model), model, feed)
    kept = assert_parity(session(model, remove_pruned=False), model, feed)
    np.testing.assert_allclose(removed, kept, rtol=0, atol=REL_TOL * float(np.abs(kept).max()))


def test_layer_without_heads_or_ffn_is_a_constant_bias() -> None:
    def bits(name: str, groups: int) -> list[int]:
        if name == "bert.encoder.layer.0.attention.self.value" or name == "bert.encoder.layer.1.intermediate.dense":
            return [0] * groups
        return mixed_bits(4)(name, groups)

    model = quant_bert(4, bits)
    arrays = materialize(model)
    assert arrays.layers[0].num_heads == 0 and arrays.layers[1].inter.shape[0] == 0
    assert_parity(session(model), model, inputs(5))


def test_subgroups_straddling_head_boundaries() -> None:
    """3-row subgroups, 16-row heads (as MiniLM's 128 subgroups of 384 rows, 32-row heads): pruning
    head 1 takes the subgroups of rows 15..32, so rows 15 and 32 stay as pruned rows of heads 0
    and 2, and the per-row scales of the value matrix no longer come in equal runs."""
    def bits(name: str, groups: int) -> list[int]:
        out = list(mixed_bits(11)(name, groups))
        if name == "bert.encoder.layer.0.attention.self.value":
            out = [8] * groups
            out[5:11] = [0] * 6
        return out

    model = quant_bert(11, bits, hidden_size=48, num_attention_heads=3, intermediate_size=96)
    layer = materialize(model).layers[0]
    assert layer.num_heads == 2 and layer.removed_heads == [1]
    np.testing.assert_array_equal(np.flatnonzero(layer.value.bits == 0), [15, 16])  # rows 15 and 32
    assert_parity(session(model), model, inputs(12))


@pytest.mark.parametrize("scheme,act", [
    ("symmetric", dict(act_symmetric=True)),          # signed (int8) activations
    ("twn", {}),
    ("lsq", dict(act_lsq=True)),
    ("lsq", dict(act_lsq=True, act_bits=4)),           # KDLSQ: signed 4-bit activations, clipped
    ("minmax", dict(act_bits=4)),                      # activations clipped to 4 bits in the int8 container
    ("minmax", dict(act_bits=None)),                   # weight-only: float MatMul on unpacked weights
])
def test_schemes_and_activation_quantizers_match(scheme: str, act: dict) -> None:
    model = quant_bert(5, mixed_bits(5), scheme=scheme, **act)
    with torch.no_grad():  # narrow the calibrated ranges so that inputs really get clipped
        for aq in model.modules():
            if isinstance(aq, ActQuant):
                aq.running_min.mul_(0.5)
                aq.running_max.mul_(0.5)
                if aq.step is not None:
                    aq.step.mul_(0.5)
    assert_parity(session(model), model, inputs(6))


@pytest.mark.parametrize("act", [dict(act_bits=10, act_symmetric=True), dict(act_bits=16)])
def test_activations_wider_than_8_bits_are_refused(act: dict) -> None:
    model = quant_bert(5, mixed_bits(5), **act)
    with pytest.raises(ValueError, match="activation"):
        build_model(materialize(model))


def test_quantized_pooler_and_classifier_match() -> None:
    patterns = [r"bert\.encoder\.layer\.\d+\..*(query|key|value|dense)", r"bert\.pooler\.dense", "classifier"]
    model = quant_bert(6, mixed_bits(6), patterns=patterns, subgroups={r"classifier": 2, r".*": 16})
    arrays = materialize(model)
    assert arrays.pooler.act is not None and arrays.classifier.act is not None
    assert_parity(session(model), model, inputs(8))


@pytest.mark.parametrize("scheme,emb_bits", [("minmax", 2), ("symmetric", 4), ("twn", 2)])
def test_low_bit_embeddings_match(scheme: str, emb_bits: int) -> None:
    model = quant_bert(12, mixed_bits(12), scheme=scheme, emb_bits=emb_bits)
    arrays = materialize(model)
    assert set(arrays.word.bits.tolist()) == {emb_bits} and arrays.word.codes.max() < (1 << emb_bits)
    assert_parity(session(model), model, inputs(13))


def test_fp32_model_matches_pytorch() -> None:
    model = randomize(tiny_bert(7), 7).eval()
    assert_parity(session(model), model, inputs(9))


def test_dynamic_batch_and_length(tmp_path: Path) -> None:
    model = quant_bert(8, mixed_bits(8))
    sess = session(model, tmp_path / "m.onnx")
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in onnx.load(str(tmp_path / "m.onnx")).graph.input]
    assert dims == [["batch", "length"]] * 3
    for n, length in [(1, 5), (6, 23)]:
        got = assert_parity(sess, model, inputs(n + length, n, length))
        assert got.shape == (n, 2)


def test_uncalibrated_model_does_not_export() -> None:
    with pytest.raises(ValueError, match="never saw data"):
        build_model(materialize(quant_bert(0, calibrated=False)))


MID = dict(hidden_size=128, intermediate_size=512, num_attention_heads=4, vocab_size=100)


def _file_bytes(model: torch.nn.Module, path: Path) -> int:
    onnx.save(build_model(materialize(model)), str(path))
    return path.stat().st_size


def test_low_bit_export_is_smaller_on_disk(tmp_path: Path) -> None:
    """Small vocabulary: the encoder dominates the file, so its bit-width shows in the size."""
    w8 = quant_bert(9, uniform=8, **MID)
    w2 = quant_bert(9, uniform=2, **MID)
    f8, f2 = _file_bytes(w8, tmp_path / "w8.onnx"), _file_bytes(w2, tmp_path / "w2.onnx")
    encoder_weights = 2 * (4 * 128 * 128 + 2 * 128 * 512)
    # 8 -> 2 bits saves 3/4 of the encoder codes; the unpacking nodes cost a little of it back
    assert f8 - f2 > 0.85 * (encoder_weights * 3 // 4), (f8, f2)
    assert f2 < 0.55 * f8


def test_file_bytes_match_accounted_size(tmp_path: Path) -> None:
    """File bytes of an 8-bit export within 10% of amqs.quant.model_size.

    The 8-bit codes are stored one per byte and qparams once per subgroup, as model_size counts;
    the rest is ONNX protobuf overhead, ~35 KB for the ~180 nodes and initializers of a 2-layer
    model whatever its width: 7% of this hidden-128 model (1.8% at hidden 256, but 34% of the
    100 KB default tiny model, which is why the wider config is used).
    """
    model = quant_bert(10, uniform=8, **MID)
    f = _file_bytes(model, tmp_path / "m.onnx")
    accounted = model_size(model).total_bytes
    assert accounted <= f <= 1.10 * accounted, (f, accounted)


def test_searched_word_embeddings_per_block_match(tmp_path: Path) -> None:
    """Word-embedding rows at their searched bits (10 blocks of 100 rows at 2, 4 or 8, as a search with
    search_spaces/embeddings.yaml derives them): parity, and a file smaller than the all-8-bit table's by the
    codes saved (less the unpacking nodes and the row permutation, one uint16 per block)."""
    rng = np.random.default_rng(3)
    blocks = rng.choice([2, 4, 8], size=10).tolist()
    big = {**MID, "vocab_size": 1000}
    model = randomize(tiny_bert(14, **big), 14)
    a = uniform_assignment(model, DEFAULT_LINEAR_PATTERNS, 8, num_subgroups=16,
                           embedding_num_subgroups={r"bert\.embeddings\.word_embeddings": 10, r".*": 1})
    mixed = a.with_bits({"bert.embeddings.word_embeddings": blocks})
    apply_assignment(model, mixed)
    model = calibrate(model)
    arrays = materialize(model)
    assert arrays.word.bits.tolist() == np.repeat(blocks, 100).tolist()
    assert_parity(session(model), model, inputs(15))
    uniform = randomize(tiny_bert(14, **big), 14)
    apply_assignment(uniform, a)
    f_mixed, f_8 = _file_bytes(model, tmp_path / "mixed.onnx"), _file_bytes(calibrate(uniform), tmp_path / "w8.onnx")
    saved = sum((8 - b) * 100 * 128 for b in blocks) // 8  # code bytes of the narrower blocks
    assert saved - 8_000 < f_8 - f_mixed <= saved, (f_8, f_mixed, saved)  # observed: 4.8 KB less than saved


# --- RoBERTa and DistilBERT (amqs.models.family) ---------------------------------------------------------------
@pytest.mark.parametrize("model_type", ["roberta", "distilbert"])
def test_families_match_fake_quant_with_heads_and_neurons_removed(model_type: str) -> None:
    model = quant_bert(2, prune_heads(mixed_bits(2), {0: [1, 3], 1: [2]}), model_type=model_type)
    arrays = materialize(model)
    assert arrays.model_type == model_type and [ly.num_heads for ly in arrays.layers] == [2, 3]
    assert all(ly.removed_neurons > 0 for ly in arrays.layers)
    assert (arrays.token_type is None) == (model_type == "distilbert")
    assert arrays.position_offset == (1 if model_type == "roberta" else None)
    assert arrays.head_act == ("relu" if model_type == "distilbert" else "tanh")
    feed = family_inputs(model_type, 3)
    removed = assert_parity(session(model), model, feed)
    kept = assert_parity(session(model, remove_pruned=False), model, feed)
    np.testing.assert_allclose(removed, kept, rtol=0, atol=REL_TOL * float(np.abs(kept).max()))


@pytest.mark.parametrize("model_type", ["roberta", "distilbert"])
def test_family_fp32_and_uniform_models_match_pytorch(model_type: str) -> None:
    fp32 = randomize(tiny_model(model_type, 7), 7).eval()
    assert_parity(session(fp32), fp32, family_inputs(model_type, 9))
    w4 = quant_bert(5, uniform=4, scheme="symmetric", act_symmetric=True, model_type=model_type)
    assert_parity(session(w4), w4, family_inputs(model_type, 6, n=3, length=17))


def test_roberta_positions_follow_the_padding_and_distilbert_ignores_token_types() -> None:
    roberta = quant_bert(3, mixed_bits(3), model_type="roberta")
    feed = family_inputs("roberta", 4)
    feed["input_ids"][0, 2] = 1  # a pad id inside a sequence: the tokens after it move one position back
    got = assert_parity(session(roberta), roberta, feed)
    distil = quant_bert(3, mixed_bits(3), model_type="distilbert")
    sess = session(distil)
    feed = family_inputs("distilbert", 4)
    ref = assert_parity(sess, distil, feed)
    feed["token_type_ids"][:, 5:] = 1
    np.testing.assert_array_equal(sess.run(["logits"], feed)[0], ref)
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert got.shape == ref.shape == (4, 2)
