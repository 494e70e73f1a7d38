"""Pure tensor math for per-subgroup weight quantization (no ``nn.Module`` here).

Layout convention: a weight matrix ``W[out, in]`` (or an embedding table
``[num_embeddings, dim]``) is split along its rows into ``G`` equal, contiguous
*subgroups* and viewed as ``wg[G, rows_per_group * in]`` (:func:`to_subgroups`).
Every function below is vectorized over that leading ``G`` axis: quantization
parameters are ``[G]`` tensors and bit-widths are an integer ``[G]`` tensor, so a
single matrix may mix bit-widths without any Python loop.

Bit-width semantics (:data:`ALLOWED_BITS`):

* ``0``  -- pruned: the subgroup is exactly zero.
* ``1``  -- binary: ``sign(w) * mean|w|`` (levels ``{-s, +s}``, for every scheme).
* ``2, 4, 8`` -- uniform integer grid chosen by the scheme.
* ``32`` -- not quantized, fp32 pass-through.

Gradients use the straight-through estimator (STE). For the non-learned schemes
the STE is the *plain identity* (``d out / d w = 1`` everywhere, no clipping):
min-max ranges cover every weight anyway, and the identity keeps the math
trivially exact. It is implemented as ``dq.detach() + (w - w.detach())`` rather
than ``w + (dq - w).detach()`` because the former returns *exactly* ``dq`` in
floating point (``w - w`` is exactly 0) while the latter may be off by an ulp.
LSQ (:func:`lsq_fake_quantize`) instead uses the clipped STE of the LSQ paper.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

ALLOWED_BITS: tuple[int, ...] = (0, 1, 2, 4, 8, 32)
SCHEMES: tuple[str, ...] = ("minmax", "symmetric", "twn", "lsq")
EPS = 1e-8
# Placeholder bit-width for subgroups whose value ignores the qparams (0 / 32):
# it keeps every intermediate finite so torch.where never mixes in NaN/inf grads.
_PLACEHOLDER_BITS = 8


def _effective_bits(b: Tensor) -> Tensor:
    """Replace bits 0/32 by the placeholder so qparam math stays finite."""
    return torch.where((b == 0) | (b == 32), torch.full_like(b, _PLACEHOLDER_BITS), b)


def to_subgroups(w: Tensor, num_subgroups: int) -> Tensor:
    """View ``w`` (``[rows, ...]``) as ``[G, rows // G * prod(rest)]``.

    Example:
        >>> to_subgroups(torch.zeros(8, 3), 4).shape
        torch.Size([4, 6])
    """
    rows = w.shape[0]
    if num_subgroups <= 0 or rows % num_subgroups != 0:
        raise ValueError(
            f"cannot split tensor of shape {tuple(w.shape)} into {num_subgroups} "
            f"equal row subgroups ({rows} rows)"
        )
    return w.reshape(num_subgroups, -1)


def from_subgroups(wg: Tensor, shape: Sequence[int] | torch.Size) -> Tensor:
    """Inverse of :func:`to_subgroups`.

    Example:
        >>> from_subgroups(torch.zeros(4, 6), (8, 3)).shape
        torch.Size([8, 3])
    """
    return wg.reshape(tuple(shape))


def validate_bits(bits: Tensor | Sequence[int] | int, where: str = "bits") -> None:
    """Raise ``ValueError`` if any bit-width is outside :data:`ALLOWED_BITS`.

    Example:
        >>> validate_bits([8, 4, 0])
        >>> validate_bits([3])
        Traceback (most recent call last):
        ...
        ValueError: bits: invalid bit-width(s) [3]; allowed values are (0, 1, 2, 4, 8, 32)
    """
    values = torch.as_tensor(bits).reshape(-1).tolist()
    bad = sorted({int(v) for v in values if v not in ALLOWED_BITS or int(v) != v})
    if bad:
        raise ValueError(f"{where}: invalid bit-width(s) {bad}; allowed values are {ALLOWED_BITS}")


def qrange(bits: Tensor | int, symmetric: bool) -> tuple[Tensor, Tensor]:
    """Integer range ``(qmin, qmax)`` (float tensors) for each bit-width.

    Asymmetric: ``[0, 2^b - 1]``. Symmetric (restricted, zero-centred):
    ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` so 2 bits is ternary ``{-1, 0, 1}``; 1 bit
    symmetric returns ``(-1, 1)`` but means the *binary* levels ``{-1, +1}``
    (callers treat ``bits == 1`` specially). Meaningful for ``1 <= b <= 16``;
    bits 0/32 must be handled by the caller.

    Example:
        >>> qrange(torch.tensor([2, 8]), symmetric=True)
        (tensor([  -1., -127.]), tensor([  1., 127.]))
    """
    b = torch.as_tensor(bits)
    bf = b.to(torch.float32)
    if symmetric:
        qmax = torch.where(b == 1, torch.ones_like(bf), torch.exp2(bf - 1) - 1)
        return -qmax, qmax
    return torch.zeros_like(bf), torch.exp2(bf) - 1


def _per_group(t: Tensor | float, like: Tensor) -> Tensor:
    """Make a ``[G]`` (or scalar) parameter broadcast against ``like[G, ...]``."""
    t = torch.as_tensor(t, device=like.device)
    if t.dim() == 1 and like.dim() > 1:
        return t.view(-1, *([1] * (like.dim() - 1)))
    return t


class _StraightThrough(torch.autograd.Function):
    """Forward: ``value``; backward: the gradient goes to ``x`` unchanged (one op, no extra passes over ``x``)."""

    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor) -> Tensor:  # noqa: D102
        return value.detach().to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        return grad, None


def _ste(x: Tensor, value: Tensor) -> Tensor:
    """Return exactly ``value`` in the forward pass, identity gradient to ``x``."""
    return _StraightThrough.apply(x, value)


def qparams_from_range(
    min_val: Tensor, max_val: Tensor, qmin: Tensor, qmax: Tensor, eps: float = EPS
) -> tuple[Tensor, Tensor]:
    """Asymmetric affine ``(scale, zero_point)`` from an observed ``[min, max]``.

    The range is widened to contain 0 so that 0 is exactly representable
    (padding, pruned rows), and a zero range is guarded by ``eps``.

    Example:
        >>> qparams_from_range(torch.tensor(-1.0), torch.tensor(3.0), torch.tensor(0.0), torch.tensor(255.0))
        (tensor(0.0157), tensor(64.))
    """
    min_val = min_val.clamp(max=0)
    max_val = max_val.clamp(min=0)
    scale = ((max_val - min_val) / (qmax - qmin)).clamp_min(eps)
    zero_point = torch.clamp(qmin - torch.round(min_val / scale), qmin, qmax)
    return scale, zero_point


def choose_qparams_minmax(wg: Tensor, bits: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """Per-subgroup asymmetric min-max ``(scale, zero_point)``, both ``[G]``.

    As in Q-BERT / AQ-BERT: the range is ``[min(w), max(w)]`` of each subgroup.

    Example:
        >>> s, z = choose_qparams_minmax(torch.randn(4, 16), torch.tensor([8, 8, 4, 2]))
        >>> s.shape, z.shape
        (torch.Size([4]), torch.Size([4]))
    """
    w = wg.detach()
    qmin, qmax = qrange(torch.as_tensor(bits, device=w.device), symmetric=False)
    return qparams_from_range(w.amin(dim=1), w.amax(dim=1), qmin, qmax, eps)


def choose_qparams_symmetric(wg: Tensor, bits: Tensor, eps: float = EPS) -> Tensor:
    """Per-subgroup symmetric scale ``max|w| / qmax`` (``mean|w|`` for 1 bit).

    Example:
        >>> choose_qparams_symmetric(torch.tensor([[1.0, -2.0]]), torch.tensor([2]))
        tensor([2.])
    """
    w = wg.detach().abs()
    b = torch.as_tensor(bits, device=w.device)
    _, qmax = qrange(b, symmetric=True)
    mean = w.double().mean(dim=1).to(w.dtype)  # float64: order-independent (see choose_qparams_ternary_twn)
    return torch.where(b == 1, mean, w.amax(dim=1) / qmax).clamp_min(eps)


def choose_qparams_ternary_twn(wg: Tensor) -> tuple[Tensor, Tensor]:
    """TWN ternary parameters per subgroup: ``(threshold, alpha)``, both ``[G]``.

    ``threshold = 0.7 * mean|w|`` and ``alpha = mean(|w| : |w| > threshold)``
    (Li & Liu 2016, used by TernaryBERT). ``alpha`` is 0 for an all-zero subgroup.

    Example:
        >>> choose_qparams_ternary_twn(torch.tensor([[1.0, -1.0, 0.1, 0.0]]))
        (tensor([0.3675]), tensor([1.]))
    """
    # Means in float64, then rounded once: a float32 mean over a whole matrix depends on the summation order
    # (thread count, memory layout), and a weight within one ulp of the threshold then flips between two
    # computations of the same model (seen once in 590k weights of TernaryBERT's FFN: training vs export).
    a = wg.detach().abs()
    a64 = a.double()
    threshold = (0.7 * a64.mean(dim=1)).to(a.dtype)
    mask = a > threshold[:, None]
    alpha = ((a64 * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)).to(a.dtype)
    return threshold, alpha


def fake_quantize(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: Tensor, qmax: Tensor) -> Tensor:
    """Affine quantize-dequantize with the plain (identity) STE.

    ``scale``/``zero_point``/``qmin``/``qmax`` are ``[G]`` (per subgroup of
    ``x[G, n]``) or scalars (per tensor). The forward value equals
    ``dequantize(quantize_to_int(...))`` exactly.

    Example:
        >>> fake_quantize(torch.tensor([[0.26, -1.0]]), torch.tensor([0.5]), torch.tensor([2.0]),
        ...               torch.tensor([0.0]), torch.tensor([3.0]))
        tensor([[ 0.5000, -1.0000]])
    """
    return _ste(x, _quantize_dequantize(x, scale, zero_point, qmin, qmax))


def _quantize_dequantize(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: Tensor, qmax: Tensor) -> Tensor:
    """``dequantize(quantize_to_int(x, ...))`` in float without the integer round trip (the same values: the codes
    are integers far inside float32's exact range), in place on one new tensor: the training hot path."""
    scale, zero_point = _per_group(scale, x), _per_group(zero_point, x)
    q = torch.div(x.detach(), scale).round_().add_(zero_point)
    if qmin.numel() == 1 or (qmin.amin() == qmin.amax() and qmax.amin() == qmax.amax()):
        q.clamp_(qmin.min().item(), qmax.max().item())  # one range for all subgroups: a cheaper clamp, same values
    else:
        q = torch.clamp(q, _per_group(qmin, x), _per_group(qmax, x))
    return q.sub_(zero_point).mul_(scale)


def quantize_to_int(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: Tensor, qmax: Tensor) -> Tensor:
    """Integer codes ``clamp(round(x / scale) + zero_point, qmin, qmax)`` as int32.

    Example:
        >>> quantize_to_int(torch.tensor([[0.26, -1.0]]), torch.tensor([0.5]), torch.tensor([2.0]),
        ...                 torch.tensor([0.0]), torch.tensor([3.0]))
        tensor([[3, 0]], dtype=torch.int32)
    """
    scale, zero_point = _per_group(scale, x), _per_group(zero_point, x)
    q = torch.round(x.detach() / scale) + zero_point
    return torch.clamp(q, _per_group(qmin, x), _per_group(qmax, x)).to(torch.int32)


def dequantize(q: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """``(q - zero_point) * scale``; ``[G]`` parameters broadcast over ``q[G, n]``.

    Example:
        >>> dequantize(torch.tensor([[3, 0]]), torch.tensor([0.5]), torch.tensor([2.0]))
        tensor([[ 0.5000, -1.0000]])
    """
    return (q.to(torch.float32) - _per_group(zero_point, q)) * _per_group(scale, q)


def lsq_grad_scale(numel: int, qmax: Tensor) -> Tensor:
    """LSQ step gradient scale ``g = 1 / sqrt(numel * qmax)``.

    Example:
        >>> lsq_grad_scale(100, torch.tensor([1.0, 4.0]))
        tensor([0.1000, 0.0500])
    """
    return torch.rsqrt(numel * torch.as_tensor(qmax, dtype=torch.float32))


def init_lsq_step(wg: Tensor, bits: Tensor, eps: float = EPS) -> Tensor:
    """LSQ step initialisation ``2 * mean|w| / sqrt(qmax)`` per subgroup.

    For 1-bit subgroups we use ``mean|w|`` instead, the closed-form optimal
    binary scale (the LSQ formula would start at twice that). Symmetric
    (restricted) ranges are used, as for every LSQ weight quantizer here. Bits
    0/32 get the 8-bit value (unused, but keeps the step finite).

    Example:
        >>> init_lsq_step(torch.ones(2, 4), torch.tensor([2, 8]))
        tensor([2.0000, 0.1775])
    """
    mean_abs = wg.detach().abs().mean(dim=1)
    b = _effective_bits(torch.as_tensor(bits, device=wg.device))
    _, qmax = qrange(b, symmetric=True)
    step = torch.where(b == 1, mean_abs, 2 * mean_abs / torch.sqrt(qmax))
    return step.clamp_min(eps)


def lsq_fake_quantize(
    x: Tensor,
    step: Tensor,
    qmin: Tensor,
    qmax: Tensor,
    grad_scale: Tensor | float,
    binary: Tensor | None = None,
) -> Tensor:
    """Learned step size quantization (Esser et al., 2020).

    Forward: ``round(clamp(x / s, qmin, qmax)) * s``; where ``binary`` is true the
    rounding is replaced by ``sign`` (levels ``{-s, +s}``). Backward: clipped STE
    for ``x`` (gradient 1 inside ``[qmin*s, qmax*s]``, 0 outside) and the LSQ
    gradient for ``s`` (``round(v) - v`` inside, ``qmin``/``qmax`` outside),
    multiplied by ``grad_scale``. All parameters are ``[G]`` or scalars.

    Example:
        >>> s = torch.tensor([0.5], requires_grad=True)
        >>> lsq_fake_quantize(torch.tensor([[0.3, 2.0]]), s, torch.tensor([-1.0]), torch.tensor([1.0]), 1.0)
        tensor([[0.5000, 0.5000]], grad_fn=<MulBackward0>)
    """
    s = _per_group(step, x)
    g = _per_group(grad_scale, x)
    # Value exactly s, gradient scaled by g (the "grad_scale" trick of the paper).
    s = s.detach() + (s - s.detach()) * g
    v = torch.clamp(x / s, _per_group(qmin, x), _per_group(qmax, x))
    r = torch.round(v.detach())
    if binary is not None and _any(binary):
        vd = v.detach()
        r = torch.where(_per_group(binary, x), torch.where(vd >= 0, 1.0, -1.0).to(vd.dtype), r)
    # Round with identity gradient; value exactly r so the output is exactly r * s.
    return (r + (v - v.detach())) * s


def _binarize(w: Tensor) -> Tensor:
    """Binary levels ``sign(w) * mean|w|`` per subgroup (sign(0) := +1)."""
    scale = w.abs().double().mean(dim=1, keepdim=True).to(w.dtype)  # float64: order-independent (see TWN)
    return torch.where(w >= 0, scale, -scale)


def _ternarize_twn(w: Tensor) -> Tensor:
    threshold, alpha = choose_qparams_ternary_twn(w)
    return torch.where(w.abs() > threshold[:, None], torch.sign(w) * alpha[:, None], torch.zeros_like(w))


def quantize_subgroups(
    wg: Tensor, bits: Tensor | Sequence[int], scheme: str = "minmax", step: Tensor | None = None
) -> Tensor:
    """Fake-quantize ``wg[G, n]`` with per-subgroup ``bits[G]`` (STE gradients).

    Schemes: ``"minmax"`` (asymmetric min-max), ``"symmetric"`` (max-abs),
    ``"twn"`` (TWN ternary for 2-bit subgroups, symmetric max-abs otherwise) and
    ``"lsq"`` (learned ``step[G]``, see :func:`lsq_fake_quantize`). For every
    scheme ``bits == 0`` gives exact zeros (and no gradient), ``bits == 32``
    returns ``wg`` unchanged and ``bits == 1`` binarizes (for LSQ: ``sign * step``).
    All subgroups are computed at once; ``torch.where`` selects per subgroup.
    Bit values are not validated here (hot path); see :func:`validate_bits`.

    Example:
        >>> wq = quantize_subgroups(torch.randn(4, 32), torch.tensor([8, 4, 0, 32]))
        >>> bool((wq[2] == 0).all())
        True
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}; expected one of {SCHEMES}")
    b = torch.as_tensor(bits, device=wg.device)
    if b.shape != (wg.shape[0],):
        raise ValueError(f"bits must have shape [{wg.shape[0]}] (one per subgroup), got {tuple(b.shape)}")
    pruned, full, binary = (b == 0)[:, None], (b == 32)[:, None], (b == 1)[:, None]
    eff = _effective_bits(b)

    if scheme == "lsq":
        if step is None:
            raise ValueError("scheme 'lsq' needs a learned `step` tensor of shape [G]")
        qmin, qmax = qrange(eff, symmetric=True)
        g = lsq_grad_scale(wg.shape[1], qmax)
        out = lsq_fake_quantize(wg, step.clamp_min(EPS), qmin, qmax, g, binary=binary).to(wg.dtype)
    else:
        w = wg.detach()
        if scheme == "minmax":
            scale, zero_point = choose_qparams_minmax(w, eff)
            qmin, qmax = qrange(eff, symmetric=False)
        else:
            scale = choose_qparams_symmetric(w, eff)
            zero_point = torch.zeros_like(scale)
            qmin, qmax = qrange(eff, symmetric=True)
        dq = _quantize_dequantize(w, scale, zero_point, qmin, qmax)
        if scheme == "twn" and _any(b == 2):
            dq = torch.where((b == 2)[:, None], _ternarize_twn(w), dq)
        if _any(binary):
            dq = torch.where(binary, _binarize(w), dq)
        out = _ste(wg, dq)
    # Full-size selections only for subgroups that need them: a where with an all-false mask is the identity, and
    # on the hot path of every training step (one per quantized matrix, forward and backward) it is not free.
    if _any(full):
        out = torch.where(full, wg, out)
    return torch.where(pruned, torch.zeros_like(out), out) if _any(pruned) else out


def _any(mask: Tensor) -> bool:
    """Whether any subgroup is selected (``[G]`` booleans: cheap next to the ``[G, n]`` selection it may skip)."""
    return bool(mask.any())


def sqnr_db(reference: Tensor, approx: Tensor) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(|w|^2 / |w - q(w)|^2)`` in dB.

    Example:
        >>> round(sqnr_db(torch.ones(4), torch.full((4,), 0.9)), 1)
        20.0
    """
    ref = reference.detach().double()
    noise = (ref - approx.detach().double()).pow(2).sum().item()
    signal = ref.pow(2).sum().item()
    return math.inf if noise == 0 else 10.0 * math.log10(signal / noise)
