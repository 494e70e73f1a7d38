"""Fake-quantization modules: ``QuantLinear``, ``QuantEmbedding`` and ``ActQuant``.

The modules only hold state (bit-widths, learned steps, activation ranges);
all math lives in :mod:`amqs.quant.functions`. ``QuantLinear`` / ``QuantEmbedding``
subclass ``nn.Linear`` / ``nn.Embedding`` and *reuse the original Parameter
objects*, so existing optimizers, weight tying and ``isinstance`` checks keep
working after surgery.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amqs.quant.functions import (
    EPS,
    SCHEMES,
    fake_quantize,
    from_subgroups,
    init_lsq_step,
    lsq_fake_quantize,
    lsq_grad_scale,
    qparams_from_range,
    qrange,
    quantize_subgroups,
    to_subgroups,
    validate_bits,
)

BitsLike = Tensor | Sequence[int] | int


def _as_bits(bits: BitsLike, num_subgroups: int | None, rows: int, what: str) -> Tensor:
    """Normalise ``bits`` to a validated int64 ``[G]`` tensor (G divides ``rows``)."""
    if isinstance(bits, int):
        bits = [bits] * (1 if num_subgroups is None else num_subgroups)
    b = torch.as_tensor(bits).detach().to("cpu", torch.int64).reshape(-1)
    if num_subgroups is not None and b.numel() != num_subgroups:
        raise ValueError(f"{what}: got {b.numel()} bit-widths for num_subgroups={num_subgroups}")
    validate_bits(b, what)
    if b.numel() == 0 or rows % b.numel() != 0:
        raise ValueError(f"{what}: {rows} rows cannot be split into {b.numel()} equal subgroups")
    return b


class _SubgroupWeightQuant:
    """Shared weight-quantization state for QuantLinear / QuantEmbedding.

    Expects the host class to define ``weight`` (rows = output neurons).
    """

    weight: nn.Parameter
    bits: Tensor
    step: nn.Parameter | None
    scheme: str

    def _init_weight_quant(self, bits: BitsLike, num_subgroups: int | None, scheme: str) -> None:
        if scheme not in SCHEMES:
            raise ValueError(f"{self._describe()}: unknown scheme {scheme!r}; expected one of {SCHEMES}")
        self.scheme = scheme
        b = _as_bits(bits, num_subgroups, self.weight.shape[0], self._describe())
        # Meta weights only happen inside from_linear/from_embedding, which moves
        # this small state to the real device afterwards.
        device = torch.device("cpu") if self.weight.is_meta else self.weight.device
        self.register_buffer("bits", b.to(device))
        if scheme == "lsq":
            self.step = nn.Parameter(torch.ones(b.numel(), device=device))
            if not self.weight.is_meta:
                self.reset_step()
        else:
            self.register_parameter("step", None)

    def _describe(self) -> str:
        return f"{type(self).__name__}(weight shape {tuple(self.weight.shape)})"

    @property
    def num_subgroups(self) -> int:
        """Number of row subgroups ``G``."""
        return self.bits.numel()

    @property
    def rows_per_subgroup(self) -> int:
        return self.weight.shape[0] // self.num_subgroups

    @torch.no_grad()
    def reset_step(self, mask: Tensor | None = None) -> None:
        """Re-initialise the LSQ step (only where ``mask`` is true, if given)."""
        if self.step is None:
            return
        init = init_lsq_step(to_subgroups(self.weight, self.num_subgroups), self.bits).to(self.step.dtype)
        self.step.copy_(init if mask is None else torch.where(mask, init, self.step))

    def set_bits(self, bits: BitsLike) -> None:
        """Change the per-subgroup bit-widths in place.

        Keeping ``G`` keeps the same ``step`` Parameter (LSQ steps are re-initialised
        only for subgroups whose bits changed). Changing ``G`` with scheme ``"lsq"``
        creates a *new* step Parameter, so optimizers must be rebuilt.

        Example:
            >>> q = QuantLinear.from_linear(nn.Linear(4, 4), [8, 8])
            >>> q.set_bits([4, 0]); q.bits.tolist()
            [4, 0]
        """
        b = _as_bits(bits, None, self.weight.shape[0], self._describe()).to(self.bits.device)
        if b.numel() == self.num_subgroups:
            changed = b != self.bits
            self.bits.copy_(b)
            self.reset_step(changed)
            return
        self.bits = b
        if self.step is not None:
            self.step = nn.Parameter(torch.ones(b.numel(), device=b.device))
            self.reset_step()

    def quantized_weight(self) -> Tensor:
        """Fake-quantized weight, same shape as ``weight`` (STE gradients).

        Example:
            >>> q = QuantLinear.from_linear(nn.Linear(4, 4), [0, 8])
            >>> q.quantized_weight()[:2].abs().sum().item()
            0.0
        """
        wg = to_subgroups(self.weight, self.num_subgroups)
        return from_subgroups(quantize_subgroups(wg, self.bits, self.scheme, self.step), self.weight.shape)

    def _quant_repr(self) -> str:
        hist = dict(sorted(Counter(self.bits.tolist()).items()))
        return f"scheme={self.scheme}, subgroups={self.num_subgroups}, bits={hist}"


class ActQuant(nn.Module):
    """Per-tensor activation fake-quantizer.

    Default (Q8BERT): asymmetric min-max range tracked by an exponential moving
    average during training (``running = m * running + (1 - m) * batch``; the
    first batch initialises it) and frozen in eval. ``symmetric=True`` tracks the
    EMA of ``max|x|`` instead (zero point 0). ``lsq=True`` learns the step
    (signed symmetric levels; initialised from the first batch as
    ``2 mean|x| / sqrt(qmax)``). ``bits`` None or 32 makes it the identity.
    The STE is the identity (see :func:`amqs.quant.functions.fake_quantize`).
    Before any training batch was seen, eval mode uses the batch's own range.

    Example:
        >>> aq = ActQuant(8)
        >>> y = aq(torch.randn(2, 3, 4))
        >>> bool(aq.initialized)
        True
    """

    def __init__(
        self, bits: int | None = 8, *, symmetric: bool = False, momentum: float = 0.9, lsq: bool = False
    ) -> None:
        super().__init__()
        if bits is not None and not (2 <= bits <= 16 or bits == 32):
            raise ValueError(f"ActQuant: activation bits must be None, 2..16 or 32, got {bits}")
        if lsq and not symmetric:
            raise ValueError("ActQuant: lsq=True uses signed symmetric levels; pass symmetric=True")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"ActQuant: momentum must be in [0, 1), got {momentum}")
        self.bits = None if bits in (None, 32) else int(bits)
        self.symmetric = symmetric
        self.momentum = momentum
        self.lsq = lsq
        self.register_buffer("running_min", torch.zeros(()))
        self.register_buffer("running_max", torch.zeros(()))
        self.register_buffer("initialized", torch.tensor(False))
        if lsq:
            self.step = nn.Parameter(torch.ones(()))
        else:
            self.register_parameter("step", None)

    @property
    def enabled(self) -> bool:
        return self.bits is not None

    def _range(self) -> tuple[Tensor, Tensor]:
        return qrange(torch.tensor(self.bits, device=self.running_min.device), self.symmetric)

    def _batch_range(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.detach().float()
        if self.symmetric:
            hi = x.abs().amax()
            return -hi, hi
        return x.amin(), x.amax()

    @torch.no_grad()
    def _observe(self, lo: Tensor, hi: Tensor) -> None:
        # torch.where instead of `if initialized` avoids a device sync per forward.
        m = self.momentum
        self.running_min.copy_(torch.where(self.initialized, m * self.running_min + (1 - m) * lo, lo))
        self.running_max.copy_(torch.where(self.initialized, m * self.running_max + (1 - m) * hi, hi))
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        if self.bits is None:
            return x
        x = x.float()  # under bf16 autocast the input may be bf16: ranges, rounding and scales stay fp32
        qmin, qmax = self._range()
        if self.lsq:
            return self._forward_lsq(x, qmin, qmax)
        lo, hi = self._batch_range(x)
        if self.training:
            self._observe(lo, hi)
        lo = torch.where(self.initialized, self.running_min, lo)
        hi = torch.where(self.initialized, self.running_max, hi)
        if self.symmetric:
            scale = (torch.maximum(hi.abs(), lo.abs()) / qmax).clamp_min(EPS)
            zero_point = torch.zeros_like(scale)
        else:
            scale, zero_point = qparams_from_range(lo, hi, qmin, qmax)
        return fake_quantize(x, scale, zero_point, qmin, qmax)

    def _forward_lsq(self, x: Tensor, qmin: Tensor, qmax: Tensor) -> Tensor:
        assert self.step is not None
        with torch.no_grad():  # data-dependent init on the first batch (any mode)
            init = 2 * x.detach().abs().float().mean() / torch.sqrt(qmax)
            self.step.copy_(torch.where(self.initialized, self.step, init.clamp_min(EPS)))
            self.initialized.fill_(True)
        g = lsq_grad_scale(x.numel(), qmax)
        return lsq_fake_quantize(x, self.step.clamp_min(EPS), qmin, qmax, g).to(x.dtype)

    def extra_repr(self) -> str:
        if self.bits is None:
            return "bits=None"
        mode = "lsq" if self.lsq else f"ema(momentum={self.momentum})"
        return f"bits={self.bits}, symmetric={self.symmetric}, {mode}"


class QuantLinear(_SubgroupWeightQuant, nn.Linear):
    """``nn.Linear`` with per-subgroup fake-quantized weights and quantized inputs.

    ``forward(x) = F.linear(act_quant(x), quantized_weight(), bias)``; the bias is
    kept in full precision. Build it from an existing layer with
    :meth:`from_linear`.

    Example:
        >>> q = QuantLinear.from_linear(nn.Linear(8, 4), [8, 4], act_bits=None)
        >>> q(torch.randn(2, 8)).shape, q.num_subgroups
        (torch.Size([2, 4]), 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        bits: BitsLike = 8,
        num_subgroups: int | None = None,
        scheme: str = "minmax",
        act_bits: int | None = 8,
        act_symmetric: bool = False,
        act_lsq: bool = False,
        act_momentum: float = 0.9,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        self._init_weight_quant(bits, num_subgroups, scheme)
        self.act_quant = ActQuant(act_bits, symmetric=act_symmetric, momentum=act_momentum, lsq=act_lsq)
        self.act_quant.to(self.bits.device)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        bits: BitsLike,
        scheme: str = "minmax",
        act_bits: int | None = 8,
        act_symmetric: bool = False,
        *,
        num_subgroups: int | None = None,
        act_lsq: bool = False,
        act_momentum: float = 0.9,
    ) -> "QuantLinear":
        """Wrap ``linear`` keeping its ``weight``/``bias`` Parameter objects.

        ``bits`` is a ``[G]`` tensor/list, or an int (then ``num_subgroups``, default 1).

        Example:
            >>> lin = nn.Linear(8, 4)
            >>> QuantLinear.from_linear(lin, 4, num_subgroups=2).weight is lin.weight
            True
        """
        # Build on the meta device so no throw-away weight is allocated/initialised.
        q = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            bits=bits,
            num_subgroups=num_subgroups,
            scheme=scheme,
            act_bits=act_bits,
            act_symmetric=act_symmetric,
            act_lsq=act_lsq,
            act_momentum=act_momentum,
            device="meta",
            dtype=linear.weight.dtype,
        )
        q.weight = linear.weight
        q.bias = linear.bias
        q.to(linear.weight.device)  # moves only the small quantizer state
        q.reset_step()
        q.train(linear.training)
        return q

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.act_quant(x), self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{nn.Linear.extra_repr(self)}, {self._quant_repr()}"


class QuantEmbedding(_SubgroupWeightQuant, nn.Embedding):
    """``nn.Embedding`` whose table is fake-quantized per block of rows.

    Example:
        >>> e = QuantEmbedding.from_embedding(nn.Embedding(10, 4), 8, num_subgroups=2)
        >>> e(torch.tensor([[1, 2]])).shape
        torch.Size([1, 2, 4])
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        *,
        bits: BitsLike = 8,
        num_subgroups: int | None = None,
        scheme: str = "minmax",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        nn.Embedding.__init__(self, num_embeddings, embedding_dim, padding_idx, device=device, dtype=dtype)
        self._init_weight_quant(bits, num_subgroups, scheme)

    @classmethod
    def from_embedding(
        cls, embedding: nn.Embedding, bits: BitsLike = 8, scheme: str = "minmax", *, num_subgroups: int | None = None
    ) -> "QuantEmbedding":
        """Wrap ``embedding`` keeping its ``weight`` Parameter object.

        Example:
            >>> emb = nn.Embedding(10, 4)
            >>> QuantEmbedding.from_embedding(emb).weight is emb.weight
            True
        """
        q = cls(
            embedding.num_embeddings,
            embedding.embedding_dim,
            embedding.padding_idx,
            bits=bits,
            num_subgroups=num_subgroups,
            scheme=scheme,
            device="meta",
            dtype=embedding.weight.dtype,
        )
        q.max_norm, q.norm_type = embedding.max_norm, embedding.norm_type
        q.scale_grad_by_freq, q.sparse = embedding.scale_grad_by_freq, embedding.sparse
        q.weight = embedding.weight
        q.to(embedding.weight.device)
        q.reset_step()
        q.train(embedding.training)
        return q

    def forward(self, input: Tensor) -> Tensor:
        return F.embedding(
            input,
            self.quantized_weight(),
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )

    def extra_repr(self) -> str:
        return f"{nn.Embedding.extra_repr(self)}, {self._quant_repr()}"
