"""Size accounting of the supernet, its budget target, and AQ-BERT's architecture objective.

A :class:`~amqs.quant.budget.Budget` (defined, with the rule that reads it, in
:mod:`amqs.quant.budget`; re-exported here) becomes the supernet's target ``V`` in
:func:`resolve_budget`.

Sizes agree bit for bit with :func:`amqs.quant.size.model_size` of the derived model:

* ``fixed`` -- everything ``model_size`` counts under ``encoder_prefix`` that is not a searched
  weight (biases, LayerNorms, activation ranges), read from ``model_size`` of the supernet itself
  minus each :class:`SupernetLinear`'s search state (logits, LSQ steps) and fp32 weight;
* ``size_table[g, c]`` of every searched module -- ``rows * in * c + qparam_bits(scheme, c)``.

``E[C] = fixed + sum_g sum_c p[g, c] size[g, c]`` (differentiable in the logits) and
``C = fixed + sum_g size[g, argmax_c]``. The size loss (AQ-BERT) is piecewise in ``C`` against the
target ``V``: ``log(E[C]/V)`` above ``(1+eps)V``, ``0`` inside the band, ``-log(E[C]/V)`` below
``(1-eps)V``. We use ``log(E[C]/V)`` rather than the paper's ``log E[C]``: it only shifts the value
(0 at the target, readable in logs); the gradient is the same.

Example::

    V = resolve_budget(Budget("compression", 8.0), model)      # target encoder bytes
    objective = SearchObjective(target_bytes=V, lam=1.0)       # CE + lam * L_size on val batches
    loss = objective(model, val_batch)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from amqs.models.family import under_prefix
from amqs.quant.budget import BUDGET_KINDS, Budget, budget_target_bits
from amqs.quant.size import ENCODER_PREFIX, model_size, qparam_bits
from amqs.search.latency import LatencyTable, kept_counts, one_hot_probs
from amqs.search.supernet import arch_entropy, arch_entropy_term, entropy_fraction, supernet_modules
from amqs.train.losses import LossFn, ce_loss


SIZE_ON = ("argmax", "expected")  # the size loss's subject (SearchObjective.size_on)


@dataclass(frozen=True)
class SizeBase:
    """Architecture-independent encoder sizes of a supernet, in bits."""

    fixed_bits: int  # stored encoder bits that are not searched weights
    fp32_bits: int  # the fp32 reference encoder (every weight at 32 bits, no activation ranges)
    searched_weights: int  # number of searched weights (tied matrices count each)


def size_base(model: nn.Module, encoder_prefix: str = ENCODER_PREFIX) -> SizeBase:
    """Fixed and fp32 encoder bits of a supernet, consistent with ``model_size``.

    Example:
        >>> base = size_base(model)  # doctest: +SKIP
    """
    modules = supernet_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no searched modules; call build_supernet first")
    report = model_size(model, encoder_prefix)
    fixed, fp32, n = report.encoder_bits, report.fp32_encoder_bits, 0
    for name, m in modules.items():
        if not under_prefix(name, encoder_prefix):
            raise ValueError(f"searched module {name} is outside encoder_prefix {encoder_prefix!r}: a space that "
                             "searches outside the encoder needs a whole-model budget (budget.kind=total_bytes or "
                             "total_compression)")
        # A searched module counts as a plain module (quantized bits == fp32 bits): its own tensors
        # are the fp32 weight, the bias, and search state (logits -- once if tied -- LSQ steps).
        bias = 32 * m.bias.numel() if getattr(m, "bias", None) is not None else 0
        own = report.per_module.get(name, 0)
        fixed -= own - bias
        fp32 -= own - bias - 32 * m.weight.numel()
        n += m.weight.numel()
    return SizeBase(fixed, fp32, n)


def expected_size_bits(
    model: nn.Module, encoder_prefix: str = ENCODER_PREFIX, base: SizeBase | None = None, noise_free: bool = False
) -> Tensor:
    """``E[C]`` in bits: a float64 scalar, differentiable w.r.t. the logits. Under the forward's probabilities
    (noise, temperature, hard samples), or with ``noise_free`` under ``softmax(alpha)`` (what the search commits to).

    Example:
        >>> expected_size_bits(model).backward()  # doctest: +SKIP
    """
    base = base or size_base(model, encoder_prefix)
    terms = [((m.choice_probs() if noise_free else m.probs()).double() * m.size_table).sum()
             for m in supernet_modules(model).values()]
    return torch.stack(terms).sum() + float(base.fixed_bits)  # stays on the logits' device


@torch.no_grad()
def argmax_size_bits(model: nn.Module, encoder_prefix: str = ENCODER_PREFIX, base: SizeBase | None = None) -> int:
    """``C`` in bits: exact encoder size of the current most-probable assignment.

    Equals ``model_size(derived).encoder_bits`` of the model derived from it.

    Example:
        >>> argmax_size_bits(model)  # doctest: +SKIP
    """
    chosen = [m.size_table.gather(1, m.arch_logits.argmax(-1, keepdim=True)).sum() for m in supernet_modules(model).values()]
    return (base or size_base(model, encoder_prefix)).fixed_bits + int(torch.stack(chosen).sum())  # one device sync


def size_bounds_bits(model: nn.Module, encoder_prefix: str = ENCODER_PREFIX) -> tuple[int, int]:
    """Encoder bits with every subgroup at its smallest / largest choice.

    Example:
        >>> lo, hi = size_bounds_bits(model)  # doctest: +SKIP
    """
    base = size_base(model, encoder_prefix).fixed_bits
    mods = supernet_modules(model).values()
    lo = base + sum(int(m.size_table.min(-1).values.sum()) for m in mods)
    hi = base + sum(int(m.size_table.max(-1).values.sum()) for m in mods)
    return lo, hi


def resolve_budget(budget: Budget, model: nn.Module, encoder_prefix: str = ENCODER_PREFIX) -> float:
    """Target bytes ``V`` of ``budget`` for this supernet, in the budget's scope (the encoder under
    ``encoder_prefix``, or the whole model for the ``total_*`` kinds); raises if it is infeasible.

    The rule is :func:`amqs.quant.budget.budget_target_bits`; the sizes it needs are the supernet's.

    Example:
        >>> resolve_budget(Budget("avg_bits", 4), model)  # doctest: +SKIP
        104256.0
    """
    prefix = budget.prefix(encoder_prefix)
    base = size_base(model, prefix)
    qp = sum(m.num_subgroups * int(qparam_bits(m.scheme, torch.tensor([8]))) for m in supernet_modules(model).values())
    target_bits = budget_target_bits(budget, base.fixed_bits, base.fp32_bits, base.searched_weights, qp)
    lo, hi = size_bounds_bits(model, prefix)
    if not lo <= target_bits <= hi:
        raise ValueError(
            f"budget {budget.kind}={budget.value} asks for {target_bits / 8:.0f} {budget.scope} bytes, outside the "
            f"feasible range [{lo / 8:.0f}, {hi / 8:.0f}] bytes of this search space (every subgroup at its "
            f"smallest .. largest choice; fp32 {budget.scope}: {base.fp32_bits / 8:.0f} bytes)"
        )
    return target_bits / 8


def size_loss(expected_bytes: Tensor, current_bytes: float, target_bytes: float, eps: float = 0.05) -> Tensor:
    """AQ-BERT's piecewise size loss, normalised by the target (see the module docstring).

    Example:
        >>> round(size_loss(torch.tensor(200.0), 200, 100).item(), 4)  # too big: log(E/V)
        0.6931
        >>> size_loss(torch.tensor(104.0), 104, 100).item()             # inside the +-5% band
        0.0
    """
    ratio = torch.log(expected_bytes / target_bytes)
    if current_bytes > (1 + eps) * target_bytes:
        return ratio
    if current_bytes < (1 - eps) * target_bytes:
        return -ratio
    return ratio * 0.0  # zero, but still in the graph: a size-only objective can always backpropagate


@dataclass
class SearchObjective:
    """The architecture objective ``L_val = task_loss + lam * L_size`` (evaluate on search-val batches), plus
    ``lam * |log(E[T] / latency_ms)|`` with a latency budget (:mod:`amqs.search.latency`).

    ``task_loss(model, batch)`` defaults to CE; pass e.g. an ``amqs.train.distill.DistillLoss`` to add
    distillation in the same forward pass, or ``None`` for the size term alone.

    Example:
        >>> obj = SearchObjective(target_bytes=1e5, lam=0.5)
        >>> obj.eps
        0.05
    """

    target_bytes: float
    lam: float = 1.0
    eps: float = 0.05
    task_loss: LossFn | None = ce_loss
    encoder_prefix: str = ENCODER_PREFIX
    # argmax: AQ-BERT's size loss, its regime set by the argmax size C, its value by E[C] under the forward's
    # (noisy) probabilities; expected: |log(E[C]/V)| with E[C] under softmax(alpha), so the distribution itself
    # (not only its argmax) is pulled to the target, with no dead band.
    size_on: str = "argmax"
    entropy_weight: float = 0.0  # weight of the mean entropy of softmax(alpha) (times entropy_scale)
    entropy_scale: float = 1.0  # set by the search loop: the ramp of the entropy term over the search
    # A latency budget: lam * |log(E[T] / latency_ms)|, E[T] the table's prediction under softmax(alpha)
    latency_table: LatencyTable | None = None
    latency_ms: float | None = None
    # The fixed sizes do not depend on the architecture: walk model_size once per model, not per step.
    _bases: dict[int, SizeBase] = field(default_factory=dict, init=False, repr=False, compare=False)

    def _base(self, model: nn.Module) -> SizeBase:
        if id(model) not in self._bases:
            self._bases[id(model)] = size_base(model, self.encoder_prefix)
        return self._bases[id(model)]

    def __post_init__(self) -> None:
        if self.size_on not in SIZE_ON:
            raise ValueError(f"search.size_on={self.size_on!r}: use one of {', '.join(SIZE_ON)}")
        if (self.latency_ms is None) != (self.latency_table is None):
            raise ValueError("a latency budget needs both budget.latency_ms and search.latency_table")

    def expected_latency(self, model: nn.Module, committed: bool = False) -> Tensor:
        """``E[T]`` in ms under ``softmax(alpha)`` (or, ``committed``, of the argmax architecture)."""
        if self.latency_table is None:
            raise ValueError("this objective has no latency budget (budget.latency_ms, search.latency_table)")
        probs = _argmax_probs if committed else None
        return self.latency_table.predict(*kept_counts(model, self.latency_table, probs))

    def size_term(self, model: nn.Module) -> Tensor:
        """``L_size`` at the current probabilities (float64 scalar)."""
        base = self._base(model)
        if self.size_on == "expected":  # |log(E[C] / V)|: no dead band, so E[C] (and, committed, C) ends at V
            expected = expected_size_bits(model, self.encoder_prefix, base, noise_free=True) / 8
            return size_loss(expected, float(expected.detach()), self.target_bytes, 0.0)
        expected = expected_size_bits(model, self.encoder_prefix, base) / 8
        current = argmax_size_bits(model, self.encoder_prefix, base) / 8
        return size_loss(expected, current, self.target_bytes, self.eps)

    def __call__(self, model: nn.Module, batch: dict[str, Tensor] | None) -> Tensor:
        size = self.size_term(model)
        if self.task_loss is None:
            loss = size.float()
        else:
            task = self.task_loss(model, batch)  # type: ignore[arg-type]
            loss = task + self.lam * size.to(task.device, task.dtype)
        if self.latency_ms is not None:  # weighted like the size term: lam, or 1 for the size terms alone
            t = self.expected_latency(model)
            weight = 1.0 if self.task_loss is None else self.lam
            loss = loss + weight * size_loss(t, float(t.detach()), self.latency_ms, 0.0).to(loss.device, loss.dtype)
        if self.entropy_weight:
            loss = loss + self.entropy_weight * self.entropy_scale * arch_entropy_term(model).to(loss.device, loss.dtype)
        return loss

    @torch.no_grad()
    def stats(self, model: nn.Module) -> dict[str, float]:
        """Loggable numbers: expected/argmax/target encoder bytes, the size loss, mean entropy."""
        base = self._base(model)
        expected = expected_size_bits(model, self.encoder_prefix, base).item() / 8
        current = argmax_size_bits(model, self.encoder_prefix, base) / 8
        return {
            "expected_bytes": expected,
            "argmax_bytes": current,
            "target_bytes": self.target_bytes,
            "size_loss": self.size_term(model).item(),
            "arch_entropy": arch_entropy(model),
            "in_budget": float(abs(current - self.target_bytes) <= self.eps * self.target_bytes),
            **self.decision(model),
            **({} if self.latency_ms is None else {
                "expected_latency_ms": self.expected_latency(model).item(),
                "argmax_latency_ms": self.expected_latency(model, committed=True).item(),
                "target_latency_ms": self.latency_ms}),
        }

    @torch.no_grad()
    def decision(self, model: nn.Module) -> dict[str, float]:
        """How decided the search is now (:func:`decision_stats` at this objective's target)."""
        committed = expected_size_bits(model, self.encoder_prefix, self._base(model), noise_free=True).item() / 8
        return decision_stats(model, committed, self.target_bytes)


def _argmax_probs(m: nn.Module) -> Tensor:
    return one_hot_probs(m, m.arch_logits.detach().argmax(-1))


def decision_stats(model: nn.Module, committed_bytes: float, target_bytes: float) -> dict[str, float]:
    """How decided the search is: ``entropy_fraction`` (mean entropy of ``softmax(alpha)`` over its maximum) and
    ``expected_over_budget`` (``E[C]`` under ``softmax(alpha)``, noise-free, over the target)."""
    return {"entropy_fraction": entropy_fraction(model), "expected_over_budget": round(committed_bytes / target_bytes, 6)}


__all__ = ["BUDGET_KINDS", "SIZE_ON", "Budget", "LossFn", "SearchObjective", "decision_stats", "SizeBase", "argmax_size_bits", "ce_loss",
           "expected_size_bits", "resolve_budget", "size_base", "size_bounds_bits", "size_loss"]
