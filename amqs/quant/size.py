"""Exact storage-size accounting of (fake-)quantized models.

What is counted, per module (each tensor once, even if shared/tied):

* ``QuantLinear`` / ``QuantEmbedding`` weight: ``rows_per_subgroup * in * bits``
  summed over subgroups, plus per subgroup its quantization parameters
  (:func:`qparam_bits`): asymmetric ``minmax`` = fp32 scale + 8-bit zero point
  (40 bits); ``symmetric`` / ``twn`` / ``lsq`` and every 1-bit subgroup = one
  fp32 scale (32 bits). Pruned (0-bit) subgroups store nothing; 32-bit subgroups
  store 32 bits per weight and no qparams. The LSQ ``step`` *is* that scale and
  the ``bits`` buffer is metadata; neither is counted again.
* Biases (also of pruned rows -- conservative), LayerNorms, unquantized
  Linear/Embedding (pooler, classifier, ...): 32 bits per element.
* ``ActQuant``: its stored range, 2 fp32 values (64 bits) when enabled, even if
  symmetric/LSQ would need one -- conservative.
* Non-persistent buffers (``position_ids``/``token_type_ids`` of BertEmbeddings)
  are skipped; other persistent buffers count at 32 bits (floating) or at their
  dtype width (integer).

The fp32 reference is the same model with every weight at 32 bits, no qparams
and no activation quantizers. ``encoder`` = modules under ``encoder_prefix``
(default :data:`ENCODER_PREFIX` ``"bert.encoder."``: the Transformer layers, without embeddings, which
is how Q-BERT / AQ-BERT report sizes; a prefix is BERT-spelled and also covers ``roberta.encoder.`` and
``distilbert.transformer.``: :func:`amqs.models.family.under_prefix`). Bytes are ``ceil(bits / 8)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from amqs.models.family import under_prefix
from amqs.quant.assignment import BitAssignment, ModuleBits
from amqs.quant.modules import ActQuant, QuantEmbedding, QuantLinear

ENCODER_PREFIX = "bert.encoder."
FP_BITS = 32
SCALE_BITS = 32
ZERO_POINT_BITS = 8
ACT_RANGE_BITS = 2 * 32


@dataclass(frozen=True)
class SizeReport:
    """Sizes of a model; ``*_compression`` is fp32 size / quantized size."""

    encoder_bits: int
    total_bits: int
    fp32_encoder_bits: int
    fp32_total_bits: int
    encoder_bytes: int
    total_bytes: int
    fp32_encoder_bytes: int
    fp32_total_bytes: int
    encoder_compression: float
    total_compression: float
    per_module: dict[str, int] = field(default_factory=dict)  # name -> stored bits (own tensors)

    @property
    def encoder_mb(self) -> float:
        return self.encoder_bytes / 2**20

    @property
    def total_mb(self) -> float:
        return self.total_bytes / 2**20


def qparam_bits(scheme: str, bits: Tensor) -> Tensor:
    """Stored quantization-parameter bits per subgroup (``[G]`` int64).

    Example:
        >>> qparam_bits("minmax", torch.tensor([0, 1, 2, 8, 32])).tolist()
        [0, 32, 40, 40, 0]
    """
    b = torch.as_tensor(bits)
    per = SCALE_BITS + (ZERO_POINT_BITS if scheme == "minmax" else 0)
    out = torch.where(b == 1, SCALE_BITS, per)
    return torch.where((b == 0) | (b == 32), 0, out).to(torch.int64)


def quant_weight_bits(module: QuantLinear | QuantEmbedding) -> int:
    """Stored bits of a quantized module's weight: codes + qparams.

    Example:
        >>> q = QuantLinear.from_linear(nn.Linear(3, 4), [8, 0])
        >>> quant_weight_bits(q)  # 2 rows * 3 cols * 8 bits + one (scale, zero point)
        88
    """
    b = module.bits.detach().cpu().to(torch.int64)
    codes = module.rows_per_subgroup * module.weight[0].numel() * int(b.sum())
    return codes + int(qparam_bits(module.scheme, b).sum())


def _plain_bits(t: Tensor) -> int:
    width = FP_BITS if (t.is_floating_point() or t.is_complex()) else t.element_size() * 8
    return t.numel() * width


def _own_tensors(module: nn.Module) -> list[tuple[str, Tensor]]:
    """Direct parameters and persistent buffers (what a state_dict would store)."""
    skip = getattr(module, "_non_persistent_buffers_set", set())
    tensors = [(n, p) for n, p in module.named_parameters(recurse=False)]
    tensors += [(n, b) for n, b in module.named_buffers(recurse=False) if n not in skip]
    return tensors


def _module_bits(module: nn.Module, seen: set[int]) -> tuple[int, int, bool]:
    """(quantized bits, fp32-reference bits, has_tensors) of the module's own tensors."""
    tensors = [(n, t) for n, t in _own_tensors(module) if id(t) not in seen]
    seen.update(id(t) for _, t in tensors)
    if isinstance(module, ActQuant):
        return (ACT_RANGE_BITS if module.enabled else 0), 0, True
    q = fp = 0
    is_quant = isinstance(module, (QuantLinear, QuantEmbedding))
    for name, t in tensors:
        if is_quant and name == "weight":
            q += quant_weight_bits(module)  # type: ignore[arg-type]
            fp += t.numel() * FP_BITS
        elif is_quant and name in ("step", "bits"):
            continue  # step = the scale already in qparam_bits; bits = metadata
        else:
            q += _plain_bits(t)
            fp += _plain_bits(t)
    return q, fp, bool(tensors)


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def model_size(model: nn.Module, encoder_prefix: str = ENCODER_PREFIX) -> SizeReport:
    """Exact inference storage of ``model`` (see the module docstring for rules).

    Example:
        >>> report = model_size(nn.Sequential(nn.Linear(4, 2)), encoder_prefix="0")
        >>> report.total_bits, report.total_bytes  # (4*2 + 2) * 32 bits
        (320, 40)
    """
    seen: set[int] = set()
    per_module: dict[str, int] = {}
    enc = tot = fp_enc = fp_tot = 0
    for name, module in model.named_modules():
        q, fp, has = _module_bits(module, seen)
        if not has:
            continue
        per_module[name] = q
        tot += q
        fp_tot += fp
        if under_prefix(name, encoder_prefix):
            enc += q
            fp_enc += fp
    to_bytes = lambda bits: math.ceil(bits / 8)  # noqa: E731
    return SizeReport(
        encoder_bits=enc,
        total_bits=tot,
        fp32_encoder_bits=fp_enc,
        fp32_total_bits=fp_tot,
        encoder_bytes=to_bytes(enc),
        total_bytes=to_bytes(tot),
        fp32_encoder_bytes=to_bytes(fp_enc),
        fp32_total_bytes=to_bytes(fp_tot),
        encoder_compression=_ratio(to_bytes(fp_enc), to_bytes(enc)),
        total_compression=_ratio(to_bytes(fp_tot), to_bytes(tot)),
        per_module=per_module,
    )


def weight_bits_of(assignment: BitAssignment, encoder_prefix: str | None = ENCODER_PREFIX) -> tuple[int, float]:
    """``(total weight bits, average bits per weight)`` of the assignment's matrices.

    Only weight codes count (no qparams, biases or activations); pruned weights
    count as 0 bits in the average. Modules are those whose name starts with
    ``encoder_prefix`` (``None``: all modules, embeddings included).

    Example:
        >>> from amqs.quant.assignment import ModuleBits
        >>> a = BitAssignment(modules={"bert.encoder.fc": ModuleBits(2, (8, 0), 4, 4)})
        >>> weight_bits_of(a)
        (64, 4.0)
    """
    selected = _modules_under(assignment, encoder_prefix)
    if not selected:
        raise ValueError(f"no module of the assignment starts with {encoder_prefix!r}")
    total = sum(mb.weight_bits for mb in selected)
    return total, total / sum(mb.num_weights for mb in selected)


def pruned_fraction(assignment: BitAssignment, encoder_prefix: str | None = ENCODER_PREFIX) -> float:
    """Share of the weights of the assignment's matrices that are pruned (0 bits); 0.0 when there are none.

    Modules are those whose name starts with ``encoder_prefix`` (``None``: all), as in :func:`weight_bits_of`.

    Example:
        >>> from amqs.quant.assignment import ModuleBits
        >>> a = BitAssignment(modules={"bert.encoder.fc": ModuleBits(4, (8, 0, 0, 4), 4, 4)})
        >>> pruned_fraction(a)
        0.5
    """
    selected = _modules_under(assignment, encoder_prefix)
    total = sum(mb.num_weights for mb in selected)
    pruned = sum(mb.rows_per_subgroup * mb.in_features * sum(b == 0 for b in mb.bits) for mb in selected)
    return pruned / total if total else 0.0


def _modules_under(assignment: BitAssignment, encoder_prefix: str | None) -> list[ModuleBits]:
    return [mb for name, mb in assignment.modules.items()
            if encoder_prefix is None or under_prefix(name, encoder_prefix)]
