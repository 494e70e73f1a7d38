"""Q-BERT-style fixed mixed precision: per-layer weight bits from a Hessian sensitivity, within a size budget.

1. **Sensitivity** of each unit (a Transformer layer, or a single matrix) on the fp32 teacher with the task
   loss over a few train batches: the average Hessian trace per weight, ``tr(H_u) / n_u``, estimated with
   Hutchinson's method (``E_v[v^T H v]``, Rademacher ``v``; one Hessian-vector product per probe serves every
   unit at once), or the cheaper empirical-Fisher proxy ``sum g^2 / n_u`` of the batch gradients. Q-BERT
   ranks layers by the top Hessian eigenvalue (mean + std over batches); the trace is HAWQ-V2's refinement.
   The estimators also give per-subgroup sums (``reduce=row_blocks(...)``) for ``amqs.search.hawq``.
2. **Allocation**: units sorted by sensitivity take non-increasing bits from ``choices`` (a more sensitive
   unit never gets fewer bits). Among those monotone assignments whose encoder fits the budget, the one
   with the smallest second-order loss estimate ``Omega = sum_u tr(H_u)/n_u * ||Q_b(W_u) - W_u||^2``
   (HAWQ-V2) wins; ties go to the larger model. ``C(U + k - 1, k - 1)`` candidates: 28 for 6 layers and
   3 choices, so the search is exhaustive.
3. **Sizes** are exact (``amqs.quant.size``): ``fixed + sum_u sum_(m in u) (rows * in * b + G * qparams(b))``;
   the budget is read by ``amqs.quant.budget.budget_target_bits`` (as the search reads it) and must be met
   (size <= target).

Example::

    assignment = mixed_assignment(teacher, build_assignment(teacher, cfg), batches, MixedConfig(),
                                  Budget("compression", 13.0))
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from amqs.config import MixedConfig
from amqs.models.family import under_prefix
from amqs.quant import BitAssignment, apply_assignment, model_size, quantize_subgroups, to_subgroups
from amqs.quant.functions import validate_bits
from amqs.quant.budget import Budget, budget_target_bits
from amqs.quant.size import ENCODER_PREFIX, qparam_bits, quant_weight_bits
from amqs.train.losses import LossFn, ce_loss

SENSITIVITIES = ("hessian", "fisher")
GRANULARITIES = ("layer", "matrix")
_LAYER = re.compile(r"(.*\.layer\.\d+)\.")
# How a tensor's per-weight terms (``v * Hv`` or ``g^2``, shaped like the weight) become its estimate: ``None`` sums
# them to one float; a callable ``(name, terms) -> Tensor`` keeps a tensor per name, e.g. one sum per row block.
Reduce = Callable[[str, Tensor], Tensor]


def unit_of(name: str, granularity: str) -> str:
    """The unit a module belongs to: its Transformer layer (``layer``) or itself (``matrix``).

    Example:
        >>> unit_of("bert.encoder.layer.3.attention.self.query", "layer")
        'bert.encoder.layer.3'
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    m = _LAYER.match(name) if granularity == "layer" else None
    return m.group(1) if m else name


def row_blocks(num_subgroups: Mapping[str, int]) -> Reduce:
    """A :data:`Reduce` summing each tensor's terms per subgroup (``num_subgroups[name]`` row blocks), in float64.

    Example:
        >>> row_blocks({"w": 2})("w", torch.ones(4, 3)).tolist()
        [6.0, 6.0]
    """
    return lambda name, terms: to_subgroups(terms.detach(), num_subgroups[name]).double().sum(1)


def hessian_trace(model: nn.Module, params: Mapping[str, Tensor], batches: Iterable[dict[str, Tensor]],
                  loss_fn: LossFn = ce_loss, probes: int = 4, seed: int = 0,
                  reduce: Reduce | None = None) -> dict[str, float] | dict[str, Tensor]:
    """Hutchinson estimate of ``tr(H)`` of the loss restricted to each tensor of ``params``, batch-averaged.

    Exact for a Hessian that is diagonal within each tensor (``v_i^2 = 1``). Attention runs in the math
    SDPA kernel (the fused CPU kernel has no double backward). With ``reduce`` (e.g. :func:`row_blocks`)
    each tensor's ``v * Hv`` terms are reduced by it instead of summed: the same probes give, per name, a
    float64 tensor (per-subgroup traces that add up to the per-tensor one).

    Example:
        >>> lin = nn.Linear(3, 1, bias=False)
        >>> t = hessian_trace(lin, {"w": lin.weight}, [{}], lambda m, b: (m.weight ** 2).sum() * 2)
        >>> round(t["w"], 6)  # d2/dw2 of 2 w^2 = 4, three weights
        12.0
    """
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    names, tensors = list(params), list(params.values())
    total = dict.fromkeys(names, 0.0)
    g = torch.Generator(device="cpu").manual_seed(seed)
    n_batches = 0
    with sdpa_kernel(SDPBackend.MATH):
        for batch in batches:
            grads = torch.autograd.grad(loss_fn(model, batch), tensors, create_graph=True)
            for p in range(probes):
                vs = [(torch.randint(0, 2, t.shape, generator=g) * 2 - 1).to(t.device, t.dtype) for t in tensors]
                hvs = torch.autograd.grad(grads, tensors, grad_outputs=vs, retain_graph=p < probes - 1)
                for name, v, hv in zip(names, vs, hvs):
                    if reduce is None:
                        total[name] += float((v * hv).sum()) / probes
                    else:
                        total[name] = total[name] + reduce(name, v * hv).double().cpu() / probes
            n_batches += 1
    if not n_batches:
        raise ValueError("no batches to estimate the Hessian trace on")
    return {k: v / n_batches for k, v in total.items()}


def fisher_trace(model: nn.Module, params: Mapping[str, Tensor], batches: Iterable[dict[str, Tensor]],
                 loss_fn: LossFn = ce_loss, reduce: Reduce | None = None) -> dict[str, float] | dict[str, Tensor]:
    """``sum g^2`` of each tensor's gradient of the batch loss, batch-averaged (an empirical-Fisher proxy).

    With ``reduce``, each tensor's ``g^2`` terms are reduced by it instead (see :func:`hessian_trace`).

    Example:
        >>> lin = nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad(): _ = lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
        >>> fisher_trace(lin, {"w": lin.weight}, [{}], lambda m, b: (m.weight ** 2).sum())["w"]  # |2w|^2
        20.0
    """
    names, tensors = list(params), list(params.values())
    total, n_batches = dict.fromkeys(names, 0.0), 0
    for batch in batches:
        grads = torch.autograd.grad(loss_fn(model, batch), tensors)
        for name, gr in zip(names, grads):
            if reduce is None:
                total[name] += float(gr.pow(2).sum())
            else:
                total[name] = total[name] + reduce(name, gr.pow(2)).double().cpu()
        n_batches += 1
    if not n_batches:
        raise ValueError("no batches to estimate the Fisher trace on")
    return {k: v / n_batches for k, v in total.items()}


def weight_traces(model: nn.Module, weights: Mapping[str, Tensor], batches: Iterable[dict[str, Tensor]],
                  measure: str = "hessian", *, probes: int = 4, seed: int = 0, loss_fn: LossFn = ce_loss,
                  reduce: Reduce | None = None) -> dict[str, float] | dict[str, Tensor]:
    """:func:`hessian_trace` or :func:`fisher_trace` (``measure``) of ``weights``, ``model`` in eval mode.

    No dropout (the loss is a deterministic function of the weights) and gradients on for ``weights`` during
    the call; the model's mode and the weights' ``requires_grad`` are restored after it.

    Example:
        >>> lin = nn.Linear(2, 2, bias=False)
        >>> t = weight_traces(lin, {"w": lin.weight}, [{}], "fisher", loss_fn=lambda m, b: m.weight.sum(),
        ...                   reduce=row_blocks({"w": 2}))
        >>> t["w"].tolist()  # every gradient is 1: two weights per row block
        [2.0, 2.0]
    """
    if measure not in SENSITIVITIES:
        raise ValueError(f"sensitivity must be one of {SENSITIVITIES}, got {measure!r}")
    was_training, grad_flags = model.training, {n: w.requires_grad for n, w in weights.items()}
    model.eval()
    try:
        for w in weights.values():
            w.requires_grad_(True)
        if measure == "hessian":
            return hessian_trace(model, weights, batches, loss_fn, probes, seed, reduce=reduce)
        return fisher_trace(model, weights, batches, loss_fn, reduce=reduce)
    finally:
        model.train(was_training)
        for n, w in weights.items():
            w.requires_grad_(grad_flags[n])


def subgroup_quant_noise(weight: Tensor, num_subgroups: int, bits: int, scheme: str) -> Tensor:
    """``||Q_b(W_g) - W_g||^2`` of each row-block subgroup ``g`` (float64 ``[G]``; the scheme's quantizer, LSQ at
    its initial step; ``bits=0``, pruning: ``||W_g||^2``).

    Example:
        >>> subgroup_quant_noise(torch.tensor([[1.0, -1.0], [3.0, 4.0]]), 2, 0, "minmax").tolist()
        [2.0, 25.0]
    """
    wg = to_subgroups(weight.detach(), num_subgroups)
    b = torch.full((num_subgroups,), bits, dtype=torch.int64, device=wg.device)
    step = None
    if scheme == "lsq":
        from amqs.quant.functions import init_lsq_step

        step = init_lsq_step(wg, b)
    return (quantize_subgroups(wg, b, scheme, step) - wg).double().pow(2).sum(1)


def quant_noise(weight: Tensor, num_subgroups: int, bits: int, scheme: str) -> float:
    """``||Q_b(W) - W||^2`` with the scheme's per-subgroup quantizer (LSQ: at its initial step).

    Example:
        >>> quant_noise(torch.tensor([[1.0, -1.0]]), 1, 8, "symmetric")
        0.0
    """
    return float(subgroup_quant_noise(weight, num_subgroups, bits, scheme).sum())


def allocate_bits(sensitivity: Mapping[str, float], cost: Mapping[str, Mapping[int, int]],
                  noise: Mapping[str, Mapping[int, float]], fixed_bits: int, target_bits: float) -> dict[str, int]:
    """Monotone bits per unit (more sensitive -> at least as many bits) fitting ``target_bits``, least ``Omega``.

    ``cost[u][b]``: stored bits of unit ``u`` at ``b`` bits; ``noise[u][b]``: its ``||Q_b(W) - W||^2``.
    Raises ``ValueError`` with the feasible range when even the smallest choice does not fit.

    Example:
        >>> cost = {"a": {2: 20, 8: 80}, "b": {2: 20, 8: 80}}
        >>> noise = {"a": {2: 1.0, 8: 0.0}, "b": {2: 1.0, 8: 0.0}}
        >>> allocate_bits({"a": 1.0, "b": 5.0}, cost, noise, fixed_bits=0, target_bits=100)
        {'a': 2, 'b': 8}
    """
    units = sorted(sensitivity, key=lambda u: -sensitivity[u])  # most sensitive first (stable on ties)
    choices = sorted({b for u in units for b in cost[u]}, reverse=True)
    if any(set(cost[u]) != set(choices) for u in units):
        raise ValueError("every unit needs a cost for every choice")
    weight = {u: max(sensitivity[u], 0.0) for u in units}  # a noisy negative trace estimate: no penalty
    best, best_key = None, None
    for combo in itertools.combinations_with_replacement(range(len(choices)), len(units)):  # non-decreasing
        bits = {u: choices[i] for u, i in zip(units, combo)}  # so bits are non-increasing along `units`
        size = fixed_bits + sum(cost[u][bits[u]] for u in units)
        if size > target_bits:
            continue
        omega = sum(weight[u] * noise[u][bits[u]] for u in units)
        key = (omega, -size)
        if best_key is None or key < best_key:
            best, best_key = bits, key
    if best is None:
        lo = fixed_bits + sum(cost[u][choices[-1]] for u in units)
        hi = fixed_bits + sum(cost[u][choices[0]] for u in units)
        raise ValueError(f"budget of {target_bits / 8:.0f} encoder bytes is infeasible: with bits {choices} the "
                         f"encoder takes {math.ceil(lo / 8)} .. {math.ceil(hi / 8)} bytes")
    return {u: best[u] for u in sensitivity}


def mixed_assignment(model: nn.Module, assignment: BitAssignment, batches: Sequence[dict[str, Tensor]],
                     cfg: MixedConfig, budget: Budget, loss_fn: LossFn = ce_loss,
                     encoder_prefix: str = ENCODER_PREFIX) -> BitAssignment:
    """``assignment`` with every encoder Linear's bits set per unit from ``model``'s sensitivity (Q-BERT).

    ``model`` is the fp32 teacher (left unchanged); ``batches`` are train batches with labels. The meta
    records the sensitivities, unit bits, budget, target and resulting encoder bytes.

    Example::

        mixed = mixed_assignment(teacher, uniform, batches[:8], MixedConfig(), Budget("compression", 13))
    """
    if cfg.sensitivity not in SENSITIVITIES:
        raise ValueError(f"mixed.sensitivity must be one of {SENSITIVITIES}, got {cfg.sensitivity!r}")
    choices = sorted(set(cfg.choices), reverse=True)
    validate_bits(choices, "mixed.choices")
    if not choices or min(choices) < 1 or max(choices) > 16:
        raise ValueError(f"mixed.choices must be bit-widths in 1..16, got {list(cfg.choices)}")
    linears = [n for n, mb in assignment.modules.items() if mb.kind == "linear" and under_prefix(n, encoder_prefix)]
    if not linears:
        raise ValueError(f"the assignment has no Linear under {encoder_prefix!r} to allocate bits to")
    units: dict[str, list[str]] = {}
    for name in linears:
        units.setdefault(unit_of(name, cfg.granularity), []).append(name)
    weights = {n: model.get_submodule(n).weight for n in linears}
    trace = weight_traces(model, weights, batches, cfg.sensitivity, probes=cfg.probes, seed=cfg.seed,
                          loss_fn=loss_fn)
    sens = {u: sum(trace[n] for n in ns) / sum(weights[n].numel() for n in ns) for u, ns in units.items()}

    scheme, mods = assignment.scheme, assignment.modules
    cost = {u: {b: sum(mods[n].rows_per_subgroup * mods[n].in_features * b * mods[n].num_subgroups
                       + mods[n].num_subgroups * int(qparam_bits(scheme, torch.tensor([b]))) for n in ns)
                for b in choices} for u, ns in units.items()}
    noise = {u: {b: sum(quant_noise(weights[n], mods[n].num_subgroups, b, scheme) for n in ns) for b in choices}
             for u, ns in units.items()}

    # Everything but the allocated weights, measured on the real quantized model.
    probe = copy.deepcopy(model)
    top = assignment.with_bits({n: [choices[0]] * mods[n].num_subgroups for n in linears})
    apply_assignment(probe, top)
    report = model_size(probe, budget.prefix(encoder_prefix))  # the encoder, or the whole model (total_*)
    fixed = report.encoder_bits - sum(quant_weight_bits(probe.get_submodule(n)) for n in linears)
    del probe
    qp8 = sum(mods[n].num_subgroups * int(qparam_bits(scheme, torch.tensor([8]))) for n in linears)
    target = budget_target_bits(budget, fixed, report.fp32_encoder_bits,
                                sum(w.numel() for w in weights.values()), qp8)

    bits = allocate_bits(sens, cost, noise, fixed, target)
    size = fixed + sum(cost[u][bits[u]] for u in units)
    omega = sum(max(sens[u], 0.0) * noise[u][bits[u]] for u in units)
    updates = {n: [bits[u]] * mods[n].num_subgroups for u, ns in units.items() for n in ns}
    return assignment.with_bits(
        updates, sensitivity={"measure": cfg.sensitivity, "granularity": cfg.granularity, "per_unit": sens},
        unit_bits=bits, budget=budget.to_dict(), target_bytes=target / 8, encoder_bytes=math.ceil(size / 8),
        fp32_encoder_bytes=report.fp32_encoder_bytes, omega=omega,
    )
