"""Turn a (fake-)quantized HF classifier of the BERT family into plain integer tensors, removing what is pruned.

:func:`materialize` reads a ``BertForSequenceClassification`` (or a RoBERTa or DistilBERT one:
:mod:`amqs.models.family`) whose Linears/Embeddings may be
:class:`~amqs.quant.QuantLinear` / :class:`~amqs.quant.QuantEmbedding` and returns a
:class:`BertArrays`: per matrix the integer codes, per-row bit-widths, scales and zero points
(the exact numbers the fake-quantized PyTorch model computes with), the static activation
quantizers, LayerNorms and biases; nothing of PyTorch remains. The families differ only in what
the arrays say: RoBERTa's positions count the non-padding tokens from ``pad_token_id + 1``
(``position_offset``) and its head is ``classifier.dense`` + tanh + ``classifier.out_proj``;
DistilBERT has no token-type table and its head is ``pre_classifier`` + ReLU + ``classifier``.
Matrix names are the model's own module names.

Physical removal (exact, not an approximation): a pruned row of a Linear still outputs its bias,
so a row can only disappear where that constant can be folded downstream:

- **FFN neurons**: a pruned row ``i`` of ``intermediate.dense`` (FFN in) outputs ``b1[i]``; ``output.dense``
  receives the constant ``act(gelu(b1[i]))`` (through its input quantizer), so
  ``W2[:, i] * act(gelu(b1[i]))`` is added to ``output.dense``'s bias and row ``i`` / column ``i``
  are removed.
- **Attention heads**: when all value rows of a head are pruned the head's context is its value
  bias (the attention probabilities sum to 1), whatever its queries and keys are; the head's
  contribution through ``attention.output.dense`` is folded into that bias and the head's query,
  key and value rows and output columns are removed.

Other pruned rows (queries or keys alone, rows of the matrices that write into the residual
stream) cannot be removed; they are stored as zero rows at 0 bits each (scale 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np
import torch
from torch import nn

from amqs.models.family import Family, UnsupportedModelError, family_of
from amqs.quant.functions import (
    _effective_bits,
    choose_qparams_minmax,
    choose_qparams_symmetric,
    choose_qparams_ternary_twn,
    qparams_from_range,
    qrange,
    quantize_to_int,
    to_subgroups,
)
from amqs.quant.modules import ActQuant, QuantEmbedding, QuantLinear

GELU_ACTS = ("gelu",)
SUPPORTED_ACTS = GELU_ACTS + ("relu",)


@dataclass
class ActParams:
    """Static input quantizer: ``q = clamp(round(x / scale) + zero_point, qmin, qmax)``."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int

    @property
    def signed(self) -> bool:
        return self.qmin < 0

    def fake_quant(self, x: np.ndarray) -> np.ndarray:
        q = np.clip(np.round(x / np.float32(self.scale)) + self.zero_point, self.qmin, self.qmax)
        return ((q - self.zero_point) * np.float32(self.scale)).astype(np.float32)


@dataclass
class Matrix:
    """One weight matrix ``[rows, cols]`` (rows = output neurons or table rows).

    ``weight`` is the effective float matrix (the dequantized codes for quantized ones). For a
    quantized matrix ``codes`` are unsigned (``0 <= codes[i] < 2**bits[i]``) and
    ``weight[i] = (codes[i] - zero_point[i]) * scale[i]``; ``group`` numbers the original subgroup
    of each row (its scale/zero point are stored once per run of equal ``group``).
    """

    name: str
    weight: np.ndarray
    bias: Optional[np.ndarray] = None
    codes: Optional[np.ndarray] = None
    bits: Optional[np.ndarray] = None
    scale: Optional[np.ndarray] = None
    zero_point: Optional[np.ndarray] = None
    group: Optional[np.ndarray] = None
    act: Optional[ActParams] = None

    @property
    def quantized(self) -> bool:
        return self.codes is not None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)  # type: ignore[return-value]

    def take_rows(self, keep: np.ndarray) -> "Matrix":
        pick = lambda a: None if a is None else a[keep]  # noqa: E731
        return replace(self, weight=self.weight[keep], bias=pick(self.bias), codes=pick(self.codes),
                       bits=pick(self.bits), scale=pick(self.scale), zero_point=pick(self.zero_point),
                       group=pick(self.group))

    def take_cols(self, keep: np.ndarray) -> "Matrix":
        return replace(self, weight=self.weight[:, keep],
                       codes=None if self.codes is None else self.codes[:, keep])

    def input_fake_quant(self, x: np.ndarray) -> np.ndarray:
        """What this matrix multiplies when fed ``x`` (its input quantizer applied)."""
        return x if self.act is None else self.act.fake_quant(x)


@dataclass
class Layer:
    query: Matrix
    key: Matrix
    value: Matrix
    attn_out: Matrix
    attn_norm: tuple[np.ndarray, np.ndarray]
    inter: Matrix
    out: Matrix
    out_norm: tuple[np.ndarray, np.ndarray]
    num_heads: int
    head_dim: int
    removed_heads: list[int] = field(default_factory=list)
    removed_neurons: int = 0


@dataclass
class BertArrays:
    """Everything the ONNX graph needs, as NumPy arrays (any family of :mod:`amqs.models.family`)."""

    word: Matrix
    position: Matrix
    token_type: Optional[Matrix]  # None: the family has no token-type table (DistilBERT)
    emb_norm: tuple[np.ndarray, np.ndarray]
    layers: list[Layer]
    pooler: Matrix  # the head's dense layer on the first token (BERT's pooler)
    classifier: Matrix
    eps: float
    hidden_act: str
    model_type: str = "bert"
    head_act: str = "tanh"  # between pooler and classifier: tanh | relu
    # None: positions 0..T-1; an int p (RoBERTa's pad_token_id): p + the running count of non-p ids, p at padding
    position_offset: Optional[int] = None

    def matrices(self) -> list[Matrix]:
        out = [self.word, self.position] + ([self.token_type] if self.token_type is not None else [])
        for ly in self.layers:
            out += [ly.query, ly.key, ly.value, ly.attn_out, ly.inter, ly.out]
        return out + [self.pooler, self.classifier]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


def act_params(aq: ActQuant, where: str) -> Optional[ActParams]:
    """The frozen (eval-mode) input quantizer of a QuantLinear, or None when it is disabled."""
    if not aq.enabled:
        return None
    if aq.bits > 8:
        raise ValueError(f"{where}: {aq.bits}-bit activations are not exportable (ONNX Runtime's integer kernels "
                         "take 8-bit inputs); export needs act_bits <= 8, or none (32)")
    if not bool(aq.initialized):
        raise ValueError(f"{where}: its activation quantizer never saw data (no range); train or calibrate "
                         "the model before exporting")
    qmin, qmax = (float(v) for v in qrange(aq.bits, aq.symmetric or aq.lsq))
    if aq.lsq:
        assert aq.step is not None
        return ActParams(float(aq.step.detach().clamp_min(1e-8)), 0, int(qmin), int(qmax))
    if aq.symmetric:
        hi = max(abs(float(aq.running_max)), abs(float(aq.running_min)))
        return ActParams(max(hi / qmax, 1e-8), 0, int(qmin), int(qmax))
    scale, zp = qparams_from_range(aq.running_min, aq.running_max, torch.tensor(qmin), torch.tensor(qmax))
    return ActParams(float(scale), int(zp), int(qmin), int(qmax))


@torch.no_grad()
def integer_weight(module: QuantLinear | QuantEmbedding, name: str) -> Matrix:
    """Codes, per-row bits/scales/zero points of a quantized matrix, checked against its own
    fake-quantized weight (so export computes exactly what training evaluated)."""
    w = module.weight.detach().float().cpu()
    bits = module.bits.detach().cpu().to(torch.int64)
    _check_exportable_bits(bits, name)
    q, scale, zp, offset = _integer_codes(module, to_subgroups(w, module.num_subgroups), bits)
    pruned = (bits == 0)[:, None]
    q = torch.where(pruned, torch.zeros_like(q), q)
    deq = torch.where(pruned, torch.zeros_like(q), (q - zp[:, None]) * scale[:, None])
    _check_reproduces(module, deq, scale, name)
    codes = torch.where(pruned, torch.zeros_like(q), q + offset[:, None]).round()
    zp_u = torch.where(bits == 0, 0.0, zp + offset)
    scale = torch.where(bits == 0, 0.0, scale)
    rows = module.rows_per_subgroup
    rep = lambda t: t.repeat_interleave(rows).numpy()  # noqa: E731
    return Matrix(
        name=name,
        weight=deq.reshape(w.shape).numpy().astype(np.float32),
        bias=_np(module.bias) if getattr(module, "bias", None) is not None else None,
        codes=codes.reshape(w.shape).numpy().astype(np.uint8),
        bits=rep(bits).astype(np.int64),
        scale=rep(scale).astype(np.float32),
        zero_point=rep(zp_u).astype(np.int64),
        group=np.arange(module.num_subgroups).repeat(rows),
        act=act_params(module.act_quant, name) if isinstance(module, QuantLinear) else None,
    )


def _check_exportable_bits(bits: torch.Tensor, name: str) -> None:
    if ((bits == 1) | (bits == 32)).any():
        raise ValueError(f"{name}: bit-widths 1 and 32 are not exportable to integer kernels "
                         f"(found {sorted(set(bits.tolist()))}); the exporter stores 0, 2, 4 and 8 bits")


def _integer_codes(module: QuantLinear | QuantEmbedding, wg: torch.Tensor, bits: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(q, scale, zero_point, offset)`` per subgroup of ``wg`` (``[G, n]``) under the module's scheme.

    ``q`` are the codes the fake quantizer rounds to (float; signed for the symmetric schemes, pruned
    rows not yet zeroed); ``q + offset`` is their unsigned storage.
    """
    eff = _effective_bits(bits)
    if module.scheme == "minmax":
        qmin, qmax = qrange(eff, symmetric=False)
        scale, zp = choose_qparams_minmax(wg, eff)
        return quantize_to_int(wg, scale, zp, qmin, qmax).float(), scale, zp, torch.zeros_like(scale)
    qmin, qmax = qrange(eff, symmetric=True)
    offset = -qmin + (eff == 8).float()  # signed codes -> unsigned storage (8 bits: +128)
    if module.scheme == "lsq":
        scale = module.step.detach().float().cpu().clamp_min(1e-8)  # type: ignore[union-attr]
        q = torch.round(torch.clamp(wg / scale[:, None], qmin[:, None], qmax[:, None]))
        return q, scale, torch.zeros_like(scale), offset
    scale = choose_qparams_symmetric(wg, eff)
    if module.scheme == "twn":
        q, scale = _ternary_codes(wg, bits, scale, qmin, qmax)
        return q, scale, torch.zeros_like(scale), offset
    zp = torch.zeros_like(scale)
    return quantize_to_int(wg, scale, zp, qmin, qmax).float(), scale, zp, offset


def _ternary_codes(wg: torch.Tensor, bits: torch.Tensor, scale: torch.Tensor, qmin: torch.Tensor,
                   qmax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TWN: 2-bit subgroups take codes -1/0/1 at scale alpha; other widths the symmetric codes."""
    thr, alpha = choose_qparams_ternary_twn(wg)
    tern = (bits == 2)[:, None]
    q_t = torch.where(wg.abs() > thr[:, None], torch.sign(wg), torch.zeros_like(wg))
    scale = torch.where(bits == 2, alpha, scale)
    q = quantize_to_int(wg, scale, torch.zeros_like(scale), qmin, qmax).float()
    return torch.where(tern, q_t, q), scale


def _check_reproduces(module: QuantLinear | QuantEmbedding, deq: torch.Tensor, scale: torch.Tensor, name: str) -> None:
    """Refuse codes whose dequantized weight differs from the module's own fake-quantized one."""
    reference = to_subgroups(module.quantized_weight().detach().float().cpu(), module.num_subgroups)
    err = (deq - reference).abs().amax()
    tol = 1e-5 * float(scale.abs().max()) + 1e-7
    if float(err) > tol:
        raise ValueError(f"{name}: integer codes do not reproduce the fake-quantized weight "
                         f"(max difference {float(err):.3g} > {tol:.3g}; scheme {module.scheme})")


def matrix(module: nn.Module, name: str) -> Matrix:
    if isinstance(module, (QuantLinear, QuantEmbedding)):
        return integer_weight(module, name)
    if isinstance(module, (nn.Linear, nn.Embedding)):
        bias = getattr(module, "bias", None)
        return Matrix(name=name, weight=_np(module.weight), bias=None if bias is None else _np(bias))
    raise TypeError(f"{name}: expected a Linear or Embedding, got {type(module).__name__}")


def _act_fn(name: str):
    if name in GELU_ACTS:
        return lambda x: 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0))).astype(np.float32)
    return lambda x: np.maximum(x, 0)


def _pruned_rows(m: Matrix) -> np.ndarray:
    return np.zeros(m.shape[0], bool) if m.bits is None else (m.bits == 0)


def remove_ffn_neurons(layer: Layer, hidden_act: str) -> Layer:
    """Remove the pruned rows of ``intermediate.dense`` and fold their constant into ``output.dense``."""
    gone = _pruned_rows(layer.inter)
    if not gone.any():
        return layer
    const = _act_fn(hidden_act)(layer.inter.bias[gone].astype(np.float64)).astype(np.float32)
    fold = layer.out.weight[:, gone] @ layer.out.input_fake_quant(const)
    keep = np.flatnonzero(~gone)
    out = layer.out.take_cols(keep)
    out = replace(out, bias=(out.bias + fold).astype(np.float32))
    return replace(layer, inter=layer.inter.take_rows(keep), out=out, removed_neurons=int(gone.sum()))


def remove_heads(layer: Layer) -> Layer:
    """Remove the heads whose value rows are all pruned, folding their constant context."""
    v_gone = _pruned_rows(layer.value).reshape(layer.num_heads, layer.head_dim).all(axis=1)
    if not v_gone.any():
        return layer
    rows = np.repeat(v_gone, layer.head_dim)
    fold = layer.attn_out.weight[:, rows] @ layer.attn_out.input_fake_quant(layer.value.bias[rows])
    keep = np.flatnonzero(~rows)
    o = layer.attn_out.take_cols(keep)
    return replace(
        layer, query=layer.query.take_rows(keep), key=layer.key.take_rows(keep), value=layer.value.take_rows(keep),
        attn_out=replace(o, bias=(o.bias + fold).astype(np.float32)),
        num_heads=int((~v_gone).sum()), removed_heads=np.flatnonzero(v_gone).tolist(),
    )


def _family(model: nn.Module) -> Family:
    if getattr(model, "config", None) is None or not hasattr(model, "base_model_prefix"):
        raise TypeError(f"export supports sequence classifiers of the BERT family (BertForSequenceClassification, "
                        f"RobertaForSequenceClassification, DistilBertForSequenceClassification); got "
                        f"{type(model).__name__}")
    family = family_of(model)
    if type(model).__name__ != family.classifier_class:
        raise UnsupportedModelError(f"export supports {family.classifier_class} for model_type "
                                    f"{family.model_type!r}; got {type(model).__name__}")
    return family


def _check_exportable(cfg, family: Family) -> None:
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"position_embedding_type={cfg.position_embedding_type!r} is not exportable (absolute only)")
    if family.hidden_act(cfg) not in SUPPORTED_ACTS:
        raise ValueError(f"hidden_act={family.hidden_act(cfg)!r} is not exportable; supported: {SUPPORTED_ACTS}")


def _layer(model: nn.Module, family: Family, i: int) -> Layer:
    """Layer ``i``'s matrices and LayerNorms, read by their BERT-spelled roles (:meth:`Family.layer_module`)."""
    cfg = model.config
    get = lambda role: model.get_submodule(family.layer_module(i, role))  # noqa: E731
    mat = lambda role: matrix(get(role), family.layer_module(i, role))  # noqa: E731
    return Layer(
        query=mat("attention.self.query"), key=mat("attention.self.key"), value=mat("attention.self.value"),
        attn_out=mat("attention.output.dense"), attn_norm=_norm(get("attention.output.LayerNorm")),
        inter=mat("intermediate.dense"), out=mat("output.dense"), out_norm=_norm(get("output.LayerNorm")),
        num_heads=cfg.num_attention_heads, head_dim=cfg.hidden_size // cfg.num_attention_heads,
    )


def _norm(m: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    return _np(m.weight), _np(m.bias)


def _head(model: nn.Module, family: Family) -> tuple[Matrix, Matrix]:
    """The head's two Linears (BERT: pooler.dense, classifier)."""
    try:
        first = model.get_submodule(family.head[0])
    except AttributeError:
        raise ValueError(f"export needs {family.head[0]} (BERT's pooler: add_pooling_layer=True, as "
                         f"{family.classifier_class} has)") from None
    return matrix(first, family.head[0]), matrix(model.get_submodule(family.head[1]), family.head[1])


def materialize(model: nn.Module, *, remove_pruned: bool = True) -> BertArrays:
    """Read a (fake-)quantized sequence classifier of the BERT family into :class:`BertArrays`.

    Example::

        arrays = materialize(student)                        # pruned heads and FFN neurons removed
        [ly.num_heads for ly in arrays.layers]               # [3, 4]
    """
    model = model.eval()
    family = _family(model)
    cfg = model.config
    _check_exportable(cfg, family)
    act = family.hidden_act(cfg)
    layers = []
    for i in range(len(model.get_submodule(family.layers))):
        layer = _layer(model, family, i)
        if remove_pruned:
            layer = remove_heads(remove_ffn_neurons(layer, act))
        layers.append(layer)
    table = lambda kind: family.own(f"bert.embeddings.{kind}_embeddings")  # noqa: E731
    types = table("token_type")
    emb_norm = model.get_submodule(family.own("bert.embeddings.LayerNorm"))
    pooler, classifier = _head(model, family)
    return BertArrays(
        word=matrix(model.get_submodule(table("word")), table("word")),
        position=matrix(model.get_submodule(table("position")), table("position")),
        token_type=matrix(model.get_submodule(types), types) if _has(model, types) else None,
        emb_norm=_norm(emb_norm), layers=layers, pooler=pooler, classifier=classifier,
        eps=float(emb_norm.eps), hidden_act=act, model_type=family.model_type, head_act=family.head_act,
        position_offset=int(cfg.pad_token_id) if family.positions_from_padding else None,
    )


def _has(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True
