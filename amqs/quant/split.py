"""Ternary weight splitting (TWS, BinaryBERT: Bai et al., ACL 2021): a ternary Linear -> an equivalent binary one.

A TWN-ternary subgroup ``t(w) = alpha * sign(w) * [|w| > Delta]`` (``Delta = 0.7 mean|w|``, ``alpha`` the mean
of the ``|w|`` above it; :func:`~amqs.quant.functions.choose_qparams_ternary_twn`) is split into two latent
matrices ``w1, w2`` whose binarizations ``b(x) = sign(x) * mean|x|`` sum to it exactly:
``b(w1) + b(w2) = t(w)``. With ``I`` the non-zero ternary entries, ``J`` the zeroed entries with ``w > 0`` and
``K`` the other zeroed ones (``S_X = sum_X |w|``, ``n`` entries per subgroup)::

    w1 = a w   on I,   w + c on J,   c      on K
    w2 = (1-a) w on I, -c    on J,   w - c  on K
    a = (S_I + S_K - S_J) / (2 S_I),   c = (n alpha - sum |w|) / (2 (|J| + |K|))

``a`` makes ``mean|w1| = mean|w2|`` and ``c`` makes their sum ``alpha`` (the paper's Eq. 6, as in its reference
code; its ``b`` is our ``c``). Then on ``I`` both halves have the sign of ``w`` (needs ``0 < a < 1``) and add up
to ``alpha sign(w)``, while on ``J`` and ``K`` they have opposite signs and cancel.

The split module :class:`TwinQuantLinear` stores ``[w1 | w2]`` as ONE 1-bit weight of twice the input width
(``[out, 2 in]``): ``y = [w1 | w2] [x; x] + bias``, i.e. BinaryBERT's two parallel binary Linears (the bias
is kept once instead of halved). One binarization scale per row subgroup of ``[w1 | w2]`` equals the paper's
two per-half scales at the split (both are ``alpha / 2``) and stays shared while fine-tuning.

Example::

    student = ...  # ternary QAT student (scheme twn, 2 bits)
    split_ternary_linears(student)  # same outputs; every ternary QuantLinear is now a 1-bit TwinQuantLinear
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amqs.quant.functions import choose_qparams_ternary_twn, to_subgroups
from amqs.quant.modules import QuantLinear


def tws_split(w: Tensor, num_subgroups: int = 1) -> tuple[Tensor, Tensor]:
    """Split latent weights ``w[rows, cols]`` into ``(w1, w2)``, per row subgroup, so ``b(w1) + b(w2) = t(w)``.

    Computed in float64 and returned in ``w.dtype``. Raises ``ValueError`` for a subgroup where the split
    cannot preserve signs (``a`` outside ``(0, 1)``: the near-zero weights outweigh the large ones).

    Example:
        >>> w1, w2 = tws_split(torch.tensor([[0.9, -1.1, 0.1, -0.2]]))
        >>> (torch.sign(w1) * w1.abs().mean() + torch.sign(w2) * w2.abs().mean()).tolist()
        [[1.0, -1.0, 0.0, 0.0]]
    """
    wg = to_subgroups(w.detach(), num_subgroups).double()
    threshold, alpha = choose_qparams_ternary_twn(wg)
    a_abs = wg.abs()
    nonzero = a_abs > threshold[:, None]
    pos_zero = ~nonzero & (wg > 0)  # J
    neg_zero = ~nonzero & ~(wg > 0)  # K (exact zeros too: w1 = c > 0, w2 = -c < 0 still cancel)
    s_i, s_j, s_k = ((a_abs * m).sum(1) for m in (nonzero, pos_zero, neg_zero))
    n_zero = (pos_zero | neg_zero).sum(1)
    n = wg.shape[1]
    a = torch.where(s_i > 0, (s_i + s_k - s_j) / (2 * s_i).clamp_min(1e-300), torch.full_like(s_i, 0.5))
    c = torch.where(n_zero > 0, (n * alpha - a_abs.sum(1)) / (2 * n_zero.clamp_min(1)), torch.zeros_like(s_i))
    bad = (s_i > 0) & ((a <= 0) | (a >= 1))
    if bad.any():
        raise ValueError(f"TWS: subgroup(s) {bad.nonzero().flatten().tolist()[:8]} cannot be split equivalently "
                         f"(a = {a[bad][:4].tolist()} outside (0, 1))")
    a, c = a[:, None], c[:, None]
    w1 = torch.where(nonzero, a * wg, torch.where(pos_zero, wg + c, c))
    w2 = torch.where(nonzero, (1 - a) * wg, torch.where(pos_zero, -c, wg - c))
    return w1.reshape(w.shape).to(w.dtype), w2.reshape(w.shape).to(w.dtype)


class TwinQuantLinear(QuantLinear):
    """A binary Linear of twice the input width fed its input twice: ``y = W[:, :in] x + W[:, in:] x + bias``.

    ``weight`` is ``[out, 2 in]`` (``in_features`` is ``2 in``; the module takes ``in``-wide inputs). Size
    accounting and bit assignments see an ordinary 1-bit QuantLinear of that shape. Build it from a ternary
    QuantLinear with :meth:`from_ternary`.

    Example:
        >>> q = QuantLinear.from_linear(nn.Linear(8, 4), 2, "twn", act_bits=None)
        >>> TwinQuantLinear.from_ternary(q)(torch.randn(3, 8)).shape
        torch.Size([3, 4])
    """

    @classmethod
    def from_ternary(cls, q: QuantLinear) -> "TwinQuantLinear":
        """The TWS split of ``q`` (every subgroup TWN ternary); keeps its bias and activation quantizer."""
        if q.scheme != "twn" or not bool((q.bits == 2).all()):
            raise ValueError(f"TWS splits ternary QuantLinears (scheme twn, 2 bits), got scheme {q.scheme!r}, "
                             f"bits {sorted(set(q.bits.tolist()))}")
        w1, w2 = tws_split(q.weight, q.num_subgroups)
        twin = cls(2 * q.in_features, q.out_features, q.bias is not None, bits=[1] * q.num_subgroups,
                   num_subgroups=q.num_subgroups, scheme="twn", act_bits=None, device="meta", dtype=q.weight.dtype)
        twin.weight = nn.Parameter(torch.cat([w1, w2], dim=1), requires_grad=q.weight.requires_grad)
        twin.bias = q.bias
        twin.to(q.weight.device)  # the small quantizer state
        twin.act_quant = q.act_quant  # same bits, ranges and statistics: [x; x] has the range of x
        twin.train(q.training)
        return twin

    def forward(self, x: Tensor) -> Tensor:
        w = self.quantized_weight()
        half = w.shape[1] // 2
        return F.linear(self.act_quant(x), w[:, :half] + w[:, half:], self.bias)


def split_ternary_linears(model: nn.Module) -> list[str]:
    """Replace, in place, every ternary QuantLinear (scheme twn, all subgroups 2 bits) by its TWS split.

    Returns the replaced names; raises ``ValueError`` if there is none. Optimizers must be rebuilt.

    Example::

        names = split_ternary_linears(student)
    """
    names = [n for n, m in model.named_modules() if type(m) is QuantLinear and m.scheme == "twn"
             and bool((m.bits == 2).all())]
    if not names:
        raise ValueError(f"{type(model).__name__} has no ternary QuantLinear (scheme twn, 2 bits) to split")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, TwinQuantLinear.from_ternary(getattr(parent, child)))
    return names
