"""Derivation: from the supernet's logits to a :class:`~amqs.quant.assignment.BitAssignment`.

The supernet and the derived network meet only through that value (DARTS's ``Genotype``): the
trainer, exporter and reports read the JSON, never the supernet.

1. Each subgroup takes its most probable choice (``argmax`` of the logits; tied modules share it).
2. Repair (optional, when a budget is given): if the derived encoder size ``C`` misses the target
   ``V`` by more than ``eps`` (relative), a greedy walk brings it inside the band. When too big it
   repeatedly lowers ONE subgroup by one choice step (e.g. 4 -> 2 bits), picking the step with the
   least loss of log-probability per bit saved, ``(log p[cur] - log p[cur-1]) / (size[cur] - size[cur-1])``;
   when too small it raises one subgroup by one step, picking the least loss of log-probability per
   bit added. Steps that would jump past the far edge of the band are avoided while others exist.
   Tied subgroups move together (their sizes add up). Log-probabilities are ``log_softmax(alpha)``.

Example::

    assignment = derived_assignment(model, space, Budget("compression", 8.0))
    assignment.to_json("assignment.json")
    apply_assignment(fresh_model, assignment)       # model_size(...).encoder_bits == meta["encoder_bits"]
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from amqs.models.family import name_matches
from amqs.quant.assignment import BitAssignment, ModuleBits
from amqs.quant.modules import QuantEmbedding
from amqs.search.objective import Budget, resolve_budget, size_base
from amqs.search.space import SearchSpace
from amqs.search.supernet import SupernetEmbedding, SupernetLinear, arch_groups, supernet_modules


def repair_choices(
    logp: Tensor, sizes: Tensor, valid: Tensor, idx: Tensor, fixed_bits: int, target_bits: float, eps: float = 0.05
) -> tuple[Tensor, int]:
    """Greedy repair of choice indices ``idx[U]`` into ``[(1-eps)V, (1+eps)V]`` (see the module docstring).

    ``logp``/``sizes``/``valid`` are ``[U, C]`` (one row per decision unit; ``valid`` masks padded
    choices, which must come last). Returns the new indices and the number of steps taken.

    Example:
        >>> lp = torch.log(torch.tensor([[0.1, 0.2, 0.7], [0.1, 0.5, 0.4]]))
        >>> sz = torch.tensor([[0.0, 10, 20], [0.0, 10, 20]])
        >>> repair_choices(lp, sz, torch.ones(2, 3, dtype=torch.bool), torch.tensor([2, 1]), 0, 20, 0.0)
        (tensor([1, 1]), 1)
    """
    idx = idx.clone()
    rows = torch.arange(idx.numel(), device=idx.device)
    n_valid = valid.sum(-1)
    lower, upper = (1 - eps) * target_bits, (1 + eps) * target_bits
    size = lambda: fixed_bits + float(sizes[rows, idx].sum())  # noqa: E731
    current, steps = size(), 0
    down = current > upper
    while (current > upper) if down else (current < lower):
        nxt = idx - 1 if down else idx + 1
        ok = (nxt >= 0) & (nxt < n_valid)
        if not bool(ok.any()):
            raise RuntimeError(f"repair ran out of steps at {current / 8:.0f} bytes (target {target_bits / 8:.0f})")
        nxt_c = nxt.clamp(0, logp.shape[1] - 1)
        delta = (sizes[rows, idx] - sizes[rows, nxt_c]).abs()  # bits saved (down) or added (up)
        cost = (logp[rows, idx] - logp[rows, nxt_c]) / delta.clamp_min(1e-12)
        room = (current - lower) if down else (upper - current)
        # Prefer steps that stay inside the band's far edge; fall back to any step.
        pref = ok & (delta <= room)
        mask = pref if bool(pref.any()) else ok
        u = int(torch.where(mask, cost, torch.full_like(cost, math.inf)).argmin())
        idx[u] = nxt_c[u]
        current += -float(delta[u]) if down else float(delta[u])
        steps += 1
    return idx, steps


def derived_assignment(
    model: nn.Module,
    space: SearchSpace,
    budget: Budget | None = None,
    *,
    eps: float = 0.05,
    repair: bool = True,
    search_config: Mapping[str, Any] | None = None,
) -> BitAssignment:
    """The derived (argmax, then repaired into the budget) assignment of a supernet.

    Includes the searched Linears and embeddings and the space's fixed embeddings. ``meta`` records the space,
    the budget, ``target_bytes``, the measured ``encoder_bits``/``encoder_bytes`` (exactly what
    ``model_size`` reports after ``apply_assignment``; for a whole-model budget, ``size_scope="total"``, they
    measure the whole model: ``model_size(...).total_bits``), the argmax size before repair, the number
    of repair steps, ``repair_fraction`` (the share of decision units -- logits rows, tied modules counting once --
    whose choice the repair changed) and ``search_config``. ``budget=None`` (or ``repair=False``) skips the repair.

    Example:
        >>> a = derived_assignment(model, space, Budget("avg_bits", 3.0))  # doctest: +SKIP
        >>> a.meta["encoder_bytes"] <= 1.05 * a.meta["target_bytes"]       # doctest: +SKIP
        True
    """
    groups = arch_groups(model)
    modules = supernet_modules(model)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no searched modules; call build_supernet first")
    fixed = size_base(model, budget.prefix(space.encoder_prefix) if budget else space.encoder_prefix).fixed_bits
    c_max = max(p.shape[1] for p, _ in groups)
    # One decision unit per logits row; tied modules add their sizes. Rows are padded to c_max.
    logp, sizes, valid = [], [], []
    for p, names in groups:
        g, c = p.shape
        pad = (0, c_max - c)
        logp.append(nn.functional.pad(torch.log_softmax(p.detach().double(), -1), pad, value=-math.inf))
        table = sum(modules[n].size_table for n in names).double()  # type: ignore[union-attr]
        sizes.append(nn.functional.pad(table, pad, value=math.inf))
        valid.append(nn.functional.pad(torch.ones(g, c, dtype=torch.bool, device=p.device), pad, value=False))
    # The greedy walk takes many tiny steps: run it on the CPU whatever the model's device.
    lp, sz, ok = torch.cat(logp).cpu(), torch.cat(sizes).cpu(), torch.cat(valid).cpu()
    idx = lp.argmax(-1)
    argmax_bits = fixed + int(sz.gather(1, idx[:, None]).sum())
    meta: dict[str, Any] = {"space": space.name, "space_source": space.source, "budget": None,
                            "argmax_encoder_bytes": math.ceil(argmax_bits / 8), "repair_steps": 0}
    if budget is not None:
        target = resolve_budget(budget, model, space.encoder_prefix)
        meta.update(budget=budget.to_dict(), size_scope=budget.scope, target_bytes=target, eps=eps)
        if repair:
            argmax_idx = idx
            idx, meta["repair_steps"] = repair_choices(lp, sz, ok, idx, fixed, 8 * target, eps)
            meta["repair_fraction"] = round(float((idx != argmax_idx).double().mean()), 6)
    bits_of: dict[str, tuple[int, ...]] = {}
    start = 0
    for p, names in groups:
        rows = idx[start : start + p.shape[0]]
        start += p.shape[0]
        for n in names:
            bits_of[n] = tuple(int(b) for b in modules[n].choices.cpu()[rows].tolist())
    encoder_bits = fixed + int(sz.gather(1, idx[:, None]).sum())
    meta.update(encoder_bits=encoder_bits, encoder_bytes=math.ceil(encoder_bits / 8), search=dict(search_config or {}))
    return BitAssignment(modules=assignment_entries(model, space, bits_of), scheme=space.scheme, act_bits=space.act_bits,
                         meta=meta)


def assignment_entries(model: nn.Module, space: SearchSpace,
                       bits_of: Mapping[str, tuple[int, ...]]) -> dict[str, ModuleBits]:
    """ModuleBits of a supernet's searched Linears and embeddings (``bits_of[name]``: bits per subgroup) and the space's fixed
    embeddings, in model order: the ``modules`` of the :class:`BitAssignment` a search returns.

    Example:
        >>> entries = assignment_entries(model, space, {n: (8,) * m.num_subgroups  # doctest: +SKIP
        ...                                              for n, m in supernet_modules(model).items()})
    """
    emb = re.compile(space.embeddings)  # matched on the name or its BERT spelling, as every space pattern
    out: dict[str, ModuleBits] = {}
    for name, m in model.named_modules():
        if isinstance(m, (SupernetLinear, SupernetEmbedding)):
            bits = bits_of[name]
            kind = "linear" if isinstance(m, SupernetLinear) else "embedding"
            out[name] = ModuleBits(len(bits), bits, *m.weight.shape, kind)
        elif isinstance(m, QuantEmbedding) and space.embedding_bits is not None and name_matches(emb, name):
            out[name] = ModuleBits(m.num_subgroups, tuple(m.bits.tolist()), *m.weight.shape, "embedding")
    return out


__all__ = ["assignment_entries", "derived_assignment", "repair_choices"]
