"""Size budgets of the encoder or of the whole model: a :class:`Budget` and the one rule that turns it into a
target size.

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

BUDGET_KINDS = ("bytes", "compression", "avg_bits", "total_bytes", "total_compression")
TOTAL_KINDS = ("total_bytes", "total_compression")  # budgets of the whole model (embeddings, pooler, head included)


@dataclass(frozen=True)
class Budget:
    """A size budget of the encoder, or of the whole model.

    ``kind``: ``"bytes"`` (encoder bytes), ``"compression"`` (fp32 encoder bytes / value),
    ``"avg_bits"`` (bits per searched weight: the size of the uniform ``value``-bit model with the
    same subgroups, i.e. ``fixed + value * weights + qparams of every (multi-bit) subgroup``), or over the
    whole model (every stored tensor, as ``model_size(...).total_bits`` counts): ``"total_bytes"``,
    ``"total_compression"`` (fp32 model bytes / value).

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

    @property
    def scope(self) -> str:
        """``"total"`` for the whole-model kinds, else ``"encoder"``."""
        return "total" if self.kind in TOTAL_KINDS else "encoder"

    def prefix(self, encoder_prefix: str) -> str:
        """The module-name prefix sizes are accounted under: ``encoder_prefix``, or ``""`` (every module).

        Example:
            >>> Budget("total_compression", 12).prefix("bert.encoder.")
            ''
        """
        return "" if self.scope == "total" else encoder_prefix


def budget_target_bits(budget: Budget, fixed_bits: int, fp32_bits: int, weights: int, qparams_8bit: int) -> float:
    """Target bits of ``budget`` in its scope (feasibility is the caller's to check).

    ``fixed_bits``: stored bits in the budget's scope (:meth:`Budget.prefix`) that are not the budgeted
    weights; ``fp32_bits``: the fp32 model in that scope; ``weights``: number of budgeted weights; ``qparams_8bit``: bits of the quantization
    parameters of all their subgroups at 8 bits. ``avg_bits``: the size of the uniform
    ``value``-bit model with the same subgroups.

    Example:
        >>> budget_target_bits(Budget("compression", 4.0), 0, 800, 20, 0)
        200.0
    """
    if budget.kind in ("bytes", "total_bytes"):
        return 8.0 * budget.value
    if budget.kind in ("compression", "total_compression"):
        return fp32_bits / budget.value
    return fixed_bits + budget.value * weights + qparams_8bit


__all__ = ["BUDGET_KINDS", "TOTAL_KINDS", "Budget", "budget_target_bits"]
