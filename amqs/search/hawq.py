"""HAWQ-V3-style mixed precision without a supernet: per-subgroup sensitivity x quantization noise, an exact ILP.

A non-differentiable competitor to the supernet search (``search.method=hawq``, ``recipe=hawq``), on the same
search space, budget, sizes and retrain:

1. **Sensitivity** of every subgroup (row block) of every searched matrix on the fp32 teacher, with the task
   loss over ``search.hawq.batches`` train batches: the Hutchinson trace of the Hessian restricted to the
   subgroup, ``sum_(i in g) v_i (Hv)_i`` averaged over ``probes`` Rademacher vectors per batch (one
   Hessian-vector product serves every subgroup; ``amqs.train.sensitivity``), or the empirical Fisher
   ``sum_(i in g) g_i^2`` (``sensitivity: fisher``). Per weight: ``s_g = tr_g / n_g``; tied modules (Q/K/V of one
   head) form one decision unit and add their traces and weight counts. A noisy negative estimate counts as 0.
   A searched embedding table (blocks of token rows) gets its measured total shared among its blocks by how
   often their tokens occur in the whole train split: the few batches see a small part of the vocabulary.
2. **Cost** of choice ``c`` for unit ``u`` (HAWQ-V2's second-order estimate): ``s_u * ||Q_c(W_u) - W_u||^2`` with
   the space's quantizer at ``c`` bits (LSQ at its initial step); pruning (``c = 0``) costs ``s_u * ||W_u||^2``.
3. **Allocation**: one choice per unit minimising the total cost ``Omega`` subject to the exact encoder size
   ``fixed + sum_u size[u, c_u] <= target`` (sizes and target exactly as the supernet search reads them) -- a
   multiple-choice knapsack, solved exactly: a Lagrangian bound and a feasible point first fix every choice
   whose reduced cost proves it out of any optimum, then a dynamic program over the exact integer sizes solves
   the units left (about a thousand, in a second, for MiniLM's 4,608); a core too large for it goes to
   ``scipy.optimize.milp`` (HiGHS, zero gap), which on such cores often cannot prove its optimum in minutes.

Example::

    amqs-search recipe=hawq budget=c16_2        # then the same retrain as a searched assignment
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array
from torch import nn

from amqs.data import load_glue, task_spec, make_loader
from amqs.quant import BitAssignment
from amqs.search.derive import assignment_entries
from amqs.search.objective import resolve_budget, size_base
from amqs.search.run import search_budget, search_supernet
from amqs.search.space import SearchSpace
from amqs.search.supernet import SupernetEmbedding, arch_groups, supernet_modules
from amqs.train.loop import seed_everything
from amqs.train.qat import load_teacher
from amqs.train.sensitivity import row_blocks, subgroup_quant_noise, weight_traces
from amqs.utils.dist import resolve_device

log = logging.getLogger(__name__)


# The dynamic program's back-pointer table (one byte per free unit and size step) may take this many bytes;
# a larger core goes to HiGHS instead.
MAX_DP_BYTES = 1 << 30


@dataclass(frozen=True)
class Allocation:
    """The solved allocation: one choice index per decision unit, its total cost and how it was found."""

    choice: np.ndarray  # [U] index into each unit's choices
    cost: float  # Omega = sum_u cost[u, choice[u]]
    size_bits: int  # sum_u size[u, choice[u]] (without the fixed bits)
    solver: str  # bound (every unit fixed by it) | dp | milp (HiGHS)
    status: str
    seconds: float
    free_units: int  # units the bound left to the exact solver


def solve_allocation(cost: np.ndarray, size: np.ndarray, target_bits: float, *, fixed_bits: int = 0,
                     time_limit: float = 60.0, max_dp_bytes: int = MAX_DP_BYTES) -> Allocation:
    """The least-``cost`` choice per unit (rows of ``cost``/``size``, ``[U, C]``; unavailable choices cost ``inf``)
    with ``fixed_bits + sum size <= target_bits``: the optimum of the integer program, exactly.

    The units a Lagrangian bound cannot fix go to a dynamic program over their exact integer sizes, or, past
    ``max_dp_bytes``, to ``scipy.optimize.milp`` (HiGHS, zero relative gap, ``time_limit`` seconds). Raises
    ``ValueError`` in one line when the budget cannot be met (with the feasible range) or HiGHS times out.

    Example:
        >>> a = solve_allocation(np.array([[9.0, 1.0, 0.0], [5.0, 2.0, 0.0]]), np.array([[0, 2, 4], [0, 2, 4]]), 6)
        >>> a.choice.tolist(), a.cost, a.size_bits
        ([1, 2], 1.0, 6)
    """
    t0 = time.perf_counter()
    valid = np.isfinite(cost)
    cost, size = np.where(valid, cost, np.inf), np.where(valid, size, 0).astype(np.int64)
    cap = math.floor(target_bits) - fixed_bits
    lo = int(np.where(valid, size, np.iinfo(np.int64).max).min(1).sum())
    if lo > cap:
        hi = int(np.where(valid, size, -1).max(1).sum())
        raise ValueError(f"budget of {target_bits / 8:.0f} encoder bytes is infeasible: this search space's "
                         f"encoder takes {(fixed_bits + lo) / 8:.0f} .. {(fixed_bits + hi) / 8:.0f} bytes")
    keep, choice = _reduce(cost, size, cap)  # choice: a feasible point, the only kept choice of a fixed unit
    free, rows = keep.sum(1) > 1, np.arange(len(cost))
    solver, status = "bound", "optimal"
    if free.any():
        rest = cap - int(size[rows[~free], choice[~free]].sum())
        base = np.where(keep[free], size[free], np.iinfo(np.int64).max).min(1)  # shift to the smallest kept size
        steps = np.where(keep[free], size[free] - base[:, None], 0)
        g = int(np.gcd.reduce(steps[keep[free]])) or 1  # ... in units of the gcd: small exact integers
        room = (rest - int(base.sum())) // g
        if int(free.sum()) * (room + 1) <= max_dp_bytes:
            solver, choice[free] = "dp", _dp(cost[free], steps // g, keep[free], room)
        else:
            solver, (choice[free], status) = "milp", _milp(cost[free], steps // g, keep[free], room, time_limit,
                                                           target_bits)
    used = int(size[rows, choice].sum())
    if used > cap:  # the sizes are exact integers: this would be a solver fault, not the user's
        raise RuntimeError(f"the allocation takes {used} bits for {cap} available")
    return Allocation(choice, float(cost[rows, choice].sum()), used, solver, status,
                      round(time.perf_counter() - t0, 3), int(free.sum()))


def _pick(cost: np.ndarray, size: np.ndarray, lam: float) -> np.ndarray:
    """Each unit's minimiser of ``cost + lam * size`` (ties to the smaller size)."""
    score = cost + lam * size
    return np.where(score <= score.min(1, keepdims=True), size, np.iinfo(np.int64).max).argmin(1)


def _reduce(cost: np.ndarray, size: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Reduced-cost fixing: the choices that can still be in an optimum (``keep[U, C]``) and a feasible point.

    For any ``lam >= 0`` and feasible ``x``: ``cost(x) >= L(lam) + r[u, x_u]`` with ``L`` the Lagrangian bound and
    ``r`` the reduced costs, so a choice with ``r > UB - L`` (``UB``: a feasible point's cost) is never optimal.
    """
    rows = np.arange(len(cost))
    lam_lo, lam_hi = 0.0, float(np.ptp(np.where(np.isfinite(cost), cost, 0.0), 1).max() + 1.0)  # all smallest
    if size[rows, _pick(cost, size, 0.0)].sum() <= cap:
        lam_hi = 0.0
    for _ in range(200):  # bisection for the multiplier of the budget
        if lam_hi - lam_lo <= 1e-12 * lam_hi:
            break
        mid = 0.5 * (lam_lo + lam_hi)
        lam_lo, lam_hi = (lam_lo, mid) if size[rows, _pick(cost, size, mid)].sum() <= cap else (mid, lam_hi)
    x = _pick(cost, size, lam_hi)  # feasible; then greedily filled
    x = _fill(cost, size, x, cap - int(size[rows, x].sum()))
    upper = float(cost[rows, x].sum())
    bounds = []
    for lam in (lam_lo, lam_hi):
        score = cost + lam * size
        bounds.append((float(score.min(1).sum()) - lam * cap, score - score.min(1, keepdims=True), lam))
    bound, reduced, lam = max(bounds, key=lambda b: b[0])
    keep = np.isfinite(cost) & (reduced <= upper - bound + 1e-9 * (abs(upper) + lam * cap))
    keep[rows, x] = True
    return keep, x


def _fill(cost: np.ndarray, size: np.ndarray, x: np.ndarray, slack: int) -> np.ndarray:
    """Greedy improvement of a feasible point: the best cost saved per bit that still fits, until none does."""
    rows, x = np.arange(len(x)), x.copy()
    while True:
        extra, gain = size - size[rows, x][:, None], cost[rows, x][:, None] - cost
        ok = (extra <= slack) & (gain > 0)
        if not ok.any():
            return x
        u, c = np.unravel_index(np.where(ok, gain / np.maximum(extra, 1), -np.inf).argmax(), cost.shape)
        slack -= int(extra[u, c])
        x[u] = c


def _dp(cost: np.ndarray, steps: np.ndarray, keep: np.ndarray, room: int) -> np.ndarray:
    """Exact: ``best[s]`` = least cost of the units so far with ``sum steps == s``, for every ``s <= room``."""
    best = np.full(room + 1, np.inf)
    best[0] = 0.0
    back = np.zeros((len(cost), room + 1), dtype=np.uint8)
    for u in range(len(cost)):
        new = np.full(room + 1, np.inf)
        for c in np.flatnonzero(keep[u]):
            k = int(steps[u, c])
            if k > room:
                continue
            cand = np.concatenate([np.full(k, np.inf), best[: room + 1 - k] + cost[u, c]])
            back[u, cand < new] = c
            new = np.minimum(new, cand)
        best = new
    s = room - int(best[::-1].argmin())  # among equal costs the largest size (ties go to the larger model)
    choice = np.zeros(len(cost), dtype=np.int64)
    for u in range(len(cost) - 1, -1, -1):
        choice[u] = back[u, s]
        s -= int(steps[u, choice[u]])
    return choice


def _milp(cost: np.ndarray, steps: np.ndarray, keep: np.ndarray, room: int, time_limit: float,
          target_bits: float) -> tuple[np.ndarray, str]:
    """HiGHS on the units left: one binary per kept choice, one choice per unit, the budget row."""
    u_idx, c_idx = np.nonzero(keep)
    n, c = len(u_idx), cost[u_idx, c_idx]
    one = LinearConstraint(csr_array((np.ones(n), (u_idx, np.arange(n))), shape=(len(cost), n)), 1, 1)
    budget = LinearConstraint(csr_array(steps[u_idx, c_idx][None, :].astype(float)), -np.inf, room)
    res = milp(c / (c.max() or 1.0), integrality=np.ones(n), bounds=Bounds(0, 1), constraints=[one, budget],
               options={"time_limit": float(time_limit), "mip_rel_gap": 0.0})  # costs of ~1: the 1e-6 abs gap
    if res.status != 0 or res.x is None:
        what = "no allocation fits" if res.status == 2 else f"no proven optimum within {time_limit:g} s"
        raise ValueError(f"HiGHS: {what} for {target_bits / 8:.0f} encoder bytes ({res.message}); raise "
                         "search.hawq.time_limit, or check the budget against the space's feasible range")
    x = np.zeros(keep.shape)
    x[u_idx, c_idx] = res.x
    return x.argmax(1), res.message


def unit_costs(teacher: nn.Module, model: nn.Module, batches: list[dict[str, torch.Tensor]], measure: str = "hessian",
               probes: int = 4, seed: int = 0, token_counts: torch.Tensor | None = None
               ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``cost[U, C]`` and ``size[U, C]`` of every decision unit (logits row of ``model``'s supernet, in
    :func:`arch_groups` order; padded choices cost ``inf``) from the sensitivity of ``teacher``'s weights.

    A searched embedding table's rows see gradients only for the tokens of ``batches``; with ``token_counts``
    (occurrences of every token id in the whole train split, :func:`token_counts`) its sensitivity is the
    table's measured total, shared among its blocks of rows in proportion to their tokens' occurrences.

    Example:
        >>> cost, size, info = unit_costs(teacher, supernet, batches[:2], "fisher")  # doctest: +SKIP
    """
    modules = supernet_modules(model)
    weights = {n: teacher.get_submodule(n).weight for n in modules}
    trace = weight_traces(teacher, weights, batches, measure, probes=probes, seed=seed,
                          reduce=row_blocks({n: m.num_subgroups for n, m in modules.items()}))
    for n, m in modules.items():  # a searched embedding: its Fisher mass spread by token frequency
        if isinstance(m, SupernetEmbedding) and token_counts is not None:
            share = token_counts.double().reshape(m.num_subgroups, -1).sum(1) / max(1, int(token_counts.sum()))
            trace[n] = trace[n].sum() * share
    groups = arch_groups(model)
    c_max = max(p.shape[1] for p, _ in groups)
    costs, sizes, negative = [], [], 0
    for p, names in groups:
        first = modules[names[0]]
        n_g = sum(modules[n].weight.numel() // first.num_subgroups for n in names)  # weights per subgroup
        per_weight = sum(trace[n] for n in names) / n_g
        negative += int((per_weight < 0).sum())
        noise = torch.stack([sum(subgroup_quant_noise(modules[n].weight, first.num_subgroups, b, first.scheme).cpu()
                                 for n in names) for b in first.choices.tolist()], 1)  # [G, C]
        pad = ((0, 0), (0, c_max - p.shape[1]))
        costs.append(np.pad((per_weight.clamp_min(0)[:, None] * noise).numpy(), pad, constant_values=np.inf))
        table = sum(modules[n].size_table for n in names).cpu().numpy()
        sizes.append(np.pad(table, pad))
    return np.concatenate(costs), np.concatenate(sizes).astype(np.int64), {"negative_clamped": negative}


@torch.no_grad()
def token_counts(loader: Any, vocab: int) -> torch.Tensor:
    """Occurrences of every token id (``[vocab]`` int64) over ``loader``'s batches, padding excluded.

    Example:
        >>> token_counts([{"input_ids": torch.tensor([[1, 2, 2, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 0]])}],
        ...              4).tolist()
        [0, 1, 2, 0]
    """
    counts = torch.zeros(vocab, dtype=torch.int64)
    for b in loader:
        counts += torch.bincount(b["input_ids"][b["attention_mask"].bool()].flatten(), minlength=vocab)
    return counts


def hawq_search(cfg: DictConfig) -> BitAssignment:
    """The HAWQ allocation of ``cfg.search.space`` under ``cfg.budget`` (module docstring), as the supernet search
    returns its derived assignment (same meta keys; ``method: hawq``, no repair).

    Example::

        assignment = hawq_search(compose("search", ["recipe=hawq", "debug=smoke"]))
    """
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    seed_everything(cfg.train.seed)
    splits = load_glue(cfg.data)
    teacher, tokenizer = load_teacher(cfg, task_spec(cfg.data).num_labels)
    model, space = search_supernet(cfg, teacher, device)
    alloc, meta = hawq_allocation(cfg, teacher, model, space, splits["train"], tokenizer, device)
    return hawq_assignment(model, space, alloc.choice, meta.pop("encoder_bits"), {
        **meta, "search": OmegaConf.to_container(cfg.search, resolve=True),
        "search_seconds": round(time.perf_counter() - t0, 1)})


def hawq_allocation(cfg: DictConfig, teacher: nn.Module, model: nn.Module, space: SearchSpace, train: Any,
                    tokenizer: Any, device: torch.device) -> tuple[Allocation, dict[str, Any]]:
    """The exact allocation of ``model``'s supernet units under ``cfg.budget`` from ``cfg.search.hawq``'s
    sensitivity of ``teacher`` on the first batches of ``train``, and its meta (with ``encoder_bits``).

    Used by :func:`hawq_search`, and by the supernet search as its prior (``search.prior=hawq``).
    """
    h = cfg.search.hawq
    budget = search_budget(cfg)
    target = resolve_budget(budget, model, space.encoder_prefix)  # fails early on an infeasible budget
    loader = make_loader(train, tokenizer, max_length=cfg.data.max_length,
                         batch_size=cfg.train.batch_size, shuffle=True, seed=cfg.train.seed,
                         progress=cfg.train.progress)
    batches = [{k: v.to(device) for k, v in b.items()} for b in itertools.islice(loader, h.batches)]
    t_sens = time.perf_counter()
    counts = None
    if any(isinstance(m, SupernetEmbedding) for m in supernet_modules(model).values()):
        counts = token_counts(loader, teacher.config.vocab_size)  # the whole train split
    cost, size, info = unit_costs(teacher.to(device), model, batches, h.sensitivity, h.probes, h.seed, counts)
    t_sens = time.perf_counter() - t_sens
    fixed = size_base(model, budget.prefix(space.encoder_prefix)).fixed_bits
    alloc = solve_allocation(cost, size, 8 * target, fixed_bits=fixed, time_limit=h.time_limit)
    log.info("hawq: %s sensitivity in %.0f s; %d units, %d left by the bound to %s: %s in %.2f s, Omega %.4g",
             h.sensitivity, t_sens, len(cost), alloc.free_units, alloc.solver, alloc.status, alloc.seconds,
             alloc.cost)
    meta = {"method": "hawq", "space": space.name, "space_source": space.source, "budget": budget.to_dict(),
            "size_scope": budget.scope, "target_bytes": target, "eps": cfg.search.eps,
            "sensitivity": {"measure": h.sensitivity, "batches": len(batches), "probes": h.probes, "seed": h.seed,
                            "seconds": round(t_sens, 1), **info},
            "omega": alloc.cost, "solver": {"name": alloc.solver, "status": alloc.status, "seconds": alloc.seconds,
                                            "units": len(cost), "free_units": alloc.free_units},
            "encoder_bits": fixed + alloc.size_bits}
    return alloc, meta


def choice_rows(model: nn.Module, choice: np.ndarray) -> list[tuple[nn.Parameter, list[str], torch.Tensor]]:
    """``choice`` (one index per decision unit, :func:`arch_groups` order) cut into each logits tensor's rows:
    ``(logits, tied module names, choice indices of its rows)``.

    Example:
        >>> [rows.tolist() for _, _, rows in choice_rows(supernet, alloc.choice)][0][:3]  # doctest: +SKIP
        [2, 0, 2]
    """
    out, start = [], 0
    for p, names in arch_groups(model):
        out.append((p, names, torch.as_tensor(choice[start:start + p.shape[0]])))
        start += p.shape[0]
    return out


def hawq_assignment(model: nn.Module, space: SearchSpace, choice: np.ndarray, encoder_bits: int,
                    meta: dict[str, Any]) -> BitAssignment:
    """The :class:`BitAssignment` of choice indices per decision unit (:func:`arch_groups` order), its meta with
    the encoder size and the keys the search's own meta has (no repair: the argmax size is the size).

    Example:
        >>> a = hawq_assignment(supernet, space, alloc.choice, bits, {"method": "hawq"})  # doctest: +SKIP
    """
    modules, bits_of = supernet_modules(model), {}
    for p, names, rows in choice_rows(model, choice):
        for n in names:
            bits_of[n] = tuple(int(b) for b in modules[n].choices.cpu()[rows].tolist())
    nbytes = math.ceil(encoder_bits / 8)
    meta = {**meta, "encoder_bits": encoder_bits, "encoder_bytes": nbytes, "argmax_encoder_bytes": nbytes,
            "repair_steps": 0, "repair_fraction": 0.0}
    return BitAssignment(modules=assignment_entries(model, space, bits_of), scheme=space.scheme,
                         act_bits=space.act_bits, meta=meta)


__all__ = ["Allocation", "choice_rows", "hawq_allocation", "hawq_assignment", "hawq_search", "solve_allocation",
           "token_counts", "unit_costs"]
