"""Size budgets of the encoder: a :class:`Budget` and the one rule that turns it into a target size.

Both readers of a budget use :func:`budget_target_bits`: the search
(:func:`amqs.search.objective.resolve_budget`, for a supernet) and the Q-BERT-style fixed
allocation (:func:`amqs.train.sensitivity.mixed_assignment`, for a fixed assignment). Each
measures the sizes the rule needs on its own kind of model and reports infeasible budgets in its
own terms.

Example:
    >>> budget_target_bits(Budget("bytes", 100), fixed_bits=0, fp32_bits=8000, weights=200, qparams_8bit=0)
    800.0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

BUDGET_KINDS = ("bytes", "compression", "avg_bits")


@dataclass(frozen=True)
class Budget:
    """A size budget of the encoder.

    ``kind``: ``"bytes"`` (encoder bytes), ``"compression"`` (fp32 encoder bytes / value) or
    ``"avg_bits"`` (bits per searched weight: the size of the uniform ``value``-bit model with the
    same subgroups, i.e. ``fixed + value * weights + qparams of every (multi-bit) subgroup``).

    Example:
        >>> Budget("compression", 8.0).to_dict()
        {'kind': 'compression', 'value': 8.0}
    """

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in BUDGET_KINDS:
            raise ValueError(f"budget kind must be one of {BUDGET_KINDS}, got {self.kind!r}")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not self.value > 0:
            raise ValueError(f"budget value must be a positive number, got {self.value!r}")

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


def budget_target_bits(budget: Budget, fixed_bits: int, fp32_bits: int, weights: int, qparams_8bit: int) -> float:
    """Target encoder bits of ``budget`` (feasibility is the caller's to check).

    ``fixed_bits``: stored encoder bits that are not the budgeted weights; ``fp32_bits``: the fp32
    encoder; ``weights``: number of budgeted weights; ``qparams_8bit``: bits of the quantization
    parameters of all their subgroups at 8 bits. ``avg_bits``: the size of the uniform
    ``value``-bit model with the same subgroups.

    Example:
        >>> budget_target_bits(Budget("compression", 4.0), 0, 800, 20, 0)
        200.0
    """
    if budget.kind == "bytes":
        return 8.0 * budget.value
    if budget.kind == "compression":
        return fp32_bits / budget.value
    return fixed_bits + budget.value * weights + qparams_8bit


__all__ = ["BUDGET_KINDS", "Budget", "budget_target_bits"]
