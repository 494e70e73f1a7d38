"""Derivation: argmax bits, exact size agreement with model_size, budget repair, JSON round trip."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from amqs.quant.assignment import BitAssignment
from amqs.quant.size import model_size
from amqs.quant.surgery import apply_assignment
from amqs.search.derive import derived_assignment, repair_choices
from amqs.search.objective import Budget, argmax_size_bits, resolve_budget
from amqs.search.space import load_space
from amqs.search.supernet import arch_parameters, build_supernet, supernet_modules
from tests.tiny import tiny_bert


def searched(space_name: str, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(fp32 twin, supernet with random logits) of the tiny BERT."""
    model = tiny_bert(seed)
    fp32 = copy.deepcopy(model)
    build_supernet(model, load_space(space_name))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in arch_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g))
    return fp32, model


@pytest.mark.parametrize("space_name", ["aqbert", "default", "structured"])
def test_argmax_derivation_and_exact_size(space_name: str) -> None:
    fp32, model = searched(space_name)
    space = load_space(space_name)
    a = derived_assignment(model, space, search_config={"lr": 0.1})
    for name, m in supernet_modules(model).items():
        assert a.modules[name].bits == tuple(m.argmax_bits().tolist())
        assert a.modules[name].num_subgroups == m.num_subgroups
    emb = {n: mb for n, mb in a.modules.items() if mb.kind == "embedding"}
    assert len(emb) == 3 and all(mb.bits == (8,) for mb in emb.values())
    assert a.scheme == space.scheme and a.act_bits == space.act_bits
    assert a.meta["space"] == space_name and a.meta["search"] == {"lr": 0.1} and a.meta["repair_steps"] == 0
    c = argmax_size_bits(model)
    assert a.meta["encoder_bits"] == c and a.meta["encoder_bytes"] == math.ceil(c / 8)
    # derived on a fresh fp32 model, and in place on the supernet itself: model_size agrees exactly
    apply_assignment(fp32, a)
    assert model_size(fp32).encoder_bits == c
    apply_assignment(model, a)
    assert not supernet_modules(model) and model_size(model).encoder_bits == c


def test_tied_subgroups_derive_together() -> None:
    _, model = searched("structured")
    a = derived_assignment(model, load_space("structured"))
    for layer in (0, 1):
        p = f"bert.encoder.layer.{layer}.attention.self."
        assert a.modules[p + "query"].bits == a.modules[p + "key"].bits == a.modules[p + "value"].bits
        assert len(a.modules[p + "query"].bits) == 4  # one per head


@pytest.mark.parametrize("space_name", ["aqbert", "structured"])
@pytest.mark.parametrize("avg_bits", [1.2, 3.6])  # below and above the random argmax (~2 / ~3.3 bits)
def test_repair_brings_size_into_budget(space_name: str, avg_bits: float) -> None:
    fp32, model = searched(space_name)
    space, budget, eps = load_space(space_name), Budget("avg_bits", avg_bits), 0.05
    target = resolve_budget(budget, model)
    before = argmax_size_bits(model) / 8
    assert abs(before - target) > eps * target  # the argmax misses the budget
    a = derived_assignment(model, space, budget, eps=eps)
    assert a.meta["repair_steps"] > 0 and a.meta["argmax_encoder_bytes"] == math.ceil(before)
    units = sum(p.shape[0] for p in arch_parameters(model))
    if space_name == "aqbert":  # no ties: every module's subgroups are its own decision units
        changed = sum(int((torch.tensor(a.modules[n].bits) != m.argmax_bits()).sum())
                      for n, m in supernet_modules(model).items())
        assert a.meta["repair_fraction"] == pytest.approx(changed / units, abs=1e-6)
    assert 0 < a.meta["repair_fraction"] <= min(1.0, a.meta["repair_steps"] / units)
    assert a.meta["budget"] == {"kind": "avg_bits", "value": avg_bits} and a.meta["target_bytes"] == target
    assert abs(a.meta["encoder_bits"] / 8 - target) <= eps * target
    apply_assignment(fp32, a)
    assert model_size(fp32).encoder_bits == a.meta["encoder_bits"]
    # repair only walks one way: every subgroup lowered when too big, raised when too small
    too_big = before > target
    for name, m in supernet_modules(model).items():
        argmax, got = m.argmax_bits(), torch.tensor(a.modules[name].bits)
        assert bool((got <= argmax).all() if too_big else (got >= argmax).all())


def test_no_repair_when_inside_band_or_disabled() -> None:
    _, model = searched("aqbert")
    space = load_space("aqbert")
    c = argmax_size_bits(model) / 8
    inside = derived_assignment(model, space, Budget("bytes", c * 1.01))
    assert inside.meta["repair_steps"] == 0 and inside.meta["encoder_bits"] == argmax_size_bits(model)
    off = derived_assignment(model, space, Budget("avg_bits", 1.0), repair=False)
    assert off.meta["repair_steps"] == 0 and off.meta["encoder_bits"] == argmax_size_bits(model)
    with pytest.raises(ValueError, match="feasible range"):
        derived_assignment(model, space, Budget("compression", 1.0))


def test_repair_greedy_rule_by_hand() -> None:
    lp = torch.log(torch.tensor([[0.1, 0.2, 0.7], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4]]))
    sizes = torch.tensor([[0.0, 10, 20], [0.0, 10, 20], [0.0, 40, 80]])
    valid = torch.ones(3, 3, dtype=torch.bool)
    # too big: 20 + 10 + 80 = 110 > (1 + 0.1) * 95. Cost per bit saved: u0 2->1 log(.7/.2)/10 = .125,
    # u1 1->0 log(.5/.1)/10 = .161, u2 2->1 log(.4/.3)/40 = .007 (cheapest) -- but u2 would land on 70,
    # past the band's far edge 85.5, so u0 is taken and lands on 100, inside [85.5, 104.5].
    idx, steps = repair_choices(lp, sizes, valid, torch.tensor([2, 1, 2]), 0, 95.0, 0.1)
    assert idx.tolist() == [1, 1, 2] and steps == 1
    # with a wide band ([49, 91]) the cheapest step wins
    idx, steps = repair_choices(lp, sizes, valid, torch.tensor([2, 1, 2]), 0, 70.0, 0.3)
    assert idx.tolist() == [2, 1, 1] and steps == 1
    # too small: 10 < 90. Cost per bit added: u0 0->1 log(.1/.2)/10 < 0 (a gain), then u0 1->2
    # log(.2/.7)/10, then u2 0->1 log(.3/.3)/40 = 0 (u1 1->2 costs log(.5/.4)/10 > 0), then u2 1->2
    # log(.3/.4)/40 < 0: 10 -> 20 -> 30 -> 70 -> 110 >= 90.
    idx, steps = repair_choices(lp, sizes, valid, torch.tensor([0, 1, 0]), 0, 100.0, 0.1)
    assert idx.tolist() == [2, 1, 2] and steps == 4
    # padded (invalid) choices are never taken
    valid[0, 2] = False
    idx, steps = repair_choices(lp, sizes, valid, torch.tensor([1, 0, 2]), 0, 105.0, 0.05)
    assert idx.tolist() == [1, 1, 2] and steps == 1
    with pytest.raises(RuntimeError, match="ran out of steps"):
        repair_choices(lp, sizes, valid, torch.tensor([1, 0, 2]), 0, 200.0, 0.05)


def test_json_round_trip(tmp_path: Path) -> None:
    _, model = searched("structured")
    a = derived_assignment(model, load_space("structured"), Budget("avg_bits", 3.0), search_config={"tau": [5, 0.1]})
    path = tmp_path / "assignment.json"
    a.to_json(path)
    b = BitAssignment.from_json(path)
    assert b == a and b.meta["search"] == {"tau": [5, 0.1]} and b.meta["encoder_bits"] == a.meta["encoder_bits"]
