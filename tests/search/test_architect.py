"""Bilevel steps: gradient isolation, warm-up, first-order and unrolled (checked against exact autograd)."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

import amqs.search.architect as architect_module
from amqs.quant.modules import ActQuant
from amqs.search.architect import Architect, ArchitectConfig, search_step, weight_optimizer
from amqs.search.objective import Budget, SearchObjective, resolve_budget
from amqs.search.space import load_space
from amqs.search.supernet import (
    SupernetLinear,
    arch_parameters,
    build_supernet,
    resample,
    set_relaxation,
    weight_parameters,
)
from tests.tiny import batch, tiny_bert


def bert_supernet(dropout: float = 0.0) -> nn.Module:
    model = tiny_bert(dropout=dropout)
    build_supernet(model, load_space("default"))
    set_relaxation(model, mode="gumbel", tau=1.0)
    return model


def objective(model: nn.Module) -> SearchObjective:
    return SearchObjective(resolve_budget(Budget("avg_bits", 3.0), model), lam=0.5)


def snapshot(params: list[nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def same(a: list[torch.Tensor], b: list[nn.Parameter]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def act_state(model: nn.Module) -> list[torch.Tensor]:
    return [t.clone() for m in model.modules() if isinstance(m, ActQuant) for t in m.state_dict().values()]


def test_optimizers_hold_disjoint_parameters() -> None:
    model = bert_supernet()
    arch = {id(p) for p in arch_parameters(model)}
    wopt = weight_optimizer(model, lr=1e-3)
    held = {id(p) for g in wopt.param_groups for p in g["params"]}
    assert held.isdisjoint(arch) and len(held) == len(weight_parameters(model))
    architect = Architect(model, objective(model))
    assert {id(p) for g in architect.optimizer.param_groups for p in g["params"]} == arch


@pytest.mark.parametrize("unrolled", [False, True])
def test_arch_step_changes_only_arch(unrolled: bool) -> None:
    model = bert_supernet(dropout=0.1)
    model(**batch(9))  # initialise the activation ranges
    architect = Architect(model, objective(model), cfg=ArchitectConfig(unrolled=unrolled))
    weights, arch = snapshot(architect.weights), snapshot(architect.arch)
    acts = act_state(model)
    resample(model)
    architect.step(batch(1), batch(2), xi=1e-2)
    assert same(weights, architect.weights)  # bit-exact, also after the unrolled virtual steps
    assert all(torch.equal(a, b) for a, b in zip(acts, act_state(model)))
    assert not same(arch, architect.arch)


def test_weight_step_adds_nothing_to_arch() -> None:
    model = bert_supernet()
    twin = copy.deepcopy(model)
    arch_before = snapshot(arch_parameters(model))
    a, b = Architect(model, objective(model)), Architect(twin, objective(twin))
    wopt = weight_optimizer(model, lr=1e-2)
    stats = search_step(model, a, wopt, batch(1), batch(2), step=0, generator=torch.Generator().manual_seed(5))
    assert set(stats) == {"train_loss", "val_loss"}
    # the twin only takes the architecture step, with the same Gumbel sample
    resample(twin, torch.Generator().manual_seed(5))
    b.step(batch(2), batch(1), xi=1e-2)
    assert same(snapshot(arch_parameters(twin)), arch_parameters(model))
    assert not same(arch_before, arch_parameters(model))
    assert not same(snapshot(weight_parameters(twin)), weight_parameters(model))  # weights did move


def test_arch_gradient_is_the_search_val_gradient() -> None:
    model = bert_supernet()
    resample(model, torch.Generator().manual_seed(0))
    obj = objective(model)
    ref = copy.deepcopy(model)  # same logits, same noise
    expected = torch.autograd.grad(obj(ref, batch(2)), arch_parameters(ref))
    architect = Architect(model, obj, cfg=ArchitectConfig(optimizer="sgd", lr=1.0))
    before = snapshot(architect.arch)
    architect.step(batch(2))
    for b0, p, g in zip(before, architect.arch, expected):
        torch.testing.assert_close(b0 - p.detach(), g, rtol=1e-5, atol=1e-9)


def test_warmup_respected() -> None:
    model = bert_supernet()
    architect = Architect(model, objective(model), cfg=ArchitectConfig(warmup_steps=2))
    wopt = weight_optimizer(model, lr=1e-3)
    for step in range(3):
        before = snapshot(architect.arch)
        stats = search_step(model, architect, wopt, batch(step), batch(10 + step), step=step, tau=2.0)
        moved = not same(before, architect.arch)
        assert moved == (step >= 2) and ("val_loss" in stats) == (step >= 2)
    by_epoch = Architect(model, objective(model), cfg=ArchitectConfig(warmup_epochs=1.5))
    assert [by_epoch.active(s, steps_per_epoch=4) for s in (5, 6)] == [False, True]
    with pytest.raises(ValueError, match="steps_per_epoch"):
        by_epoch.active(0)


def test_arch_every_moves_the_logits_on_every_kth_step_after_the_warmup() -> None:
    model = bert_supernet()
    architect = Architect(model, objective(model), cfg=ArchitectConfig(warmup_steps=1, every=3))
    wopt = weight_optimizer(model, lr=1e-3)
    moved = []
    for step in range(8):
        before = snapshot(architect.arch)
        stats = search_step(model, architect, wopt, batch(step), batch(10 + step), step=step, tau=1.0)
        moved.append(not same(before, architect.arch))
        assert ("val_loss" in stats) == moved[-1]
    assert [step for step, m in enumerate(moved) if m] == [1, 4, 7]
    by_epoch = Architect(model, objective(model), cfg=ArchitectConfig(warmup_epochs=0.5, every=2))
    assert [s for s in range(8) if by_epoch.active(s, steps_per_epoch=4)] == [2, 4, 6]
    with pytest.raises(ValueError, match="search.arch.every must be >= 1"):
        Architect(model, objective(model), cfg=ArchitectConfig(every=0))


def _searcher(every: int) -> tuple[nn.Module, Architect, torch.optim.Optimizer]:
    model = bert_supernet(dropout=0.1)
    architect = Architect(model, objective(model), cfg=ArchitectConfig(optimizer="adam", lr=0.05, every=every))
    return model, architect, weight_optimizer(model, lr=1e-3)


def _search_steps(parts: tuple, gumbel: torch.Generator, steps: range) -> None:
    for step in steps:
        search_step(*parts, batch(step, n=8), batch(10 + step, n=8), step=step, tau=1.0, generator=gumbel)


def test_arch_every_resumes_on_the_same_steps() -> None:
    """The schedule is a function of the global step: a search restored at step 4 moves the logits at step 6
    as the uninterrupted one does, and ends with the same supernet."""
    torch.manual_seed(0)
    ref = _searcher(every=3)
    _search_steps(ref, torch.Generator().manual_seed(1), range(7))
    torch.manual_seed(0)
    first, gumbel = _searcher(every=3), torch.Generator().manual_seed(1)
    _search_steps(first, gumbel, range(4))
    saved = copy.deepcopy({"model": first[0].state_dict(), "wopt": first[2].state_dict(),
                           "arch": first[1].state_dict(), "rng": torch.get_rng_state(), "gumbel": gumbel.get_state()})
    torch.manual_seed(123)  # a new process
    second, gumbel = _searcher(every=3), torch.Generator()
    second[0].load_state_dict(saved["model"])
    second[2].load_state_dict(saved["wopt"])
    second[1].load_state_dict(saved["arch"])
    torch.set_rng_state(saved["rng"])
    gumbel.set_state(saved["gumbel"])
    _search_steps(second, gumbel, range(4, 7))
    want, got = ref[0].state_dict(), second[0].state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)


@pytest.mark.parametrize("unrolled", [False, True])
def test_shared_candidates_leave_the_search_bit_identical(unrolled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Logits and weights after search steps are the same with the quantized candidates shared by a step's
    forward passes or recomputed at each; the unrolled step changes the weights in between (nothing is shared)."""
    calls: list[int] = []
    quantized = SupernetLinear._quantized
    monkeypatch.setattr(SupernetLinear, "_quantized", lambda self, c, wg: calls.append(c) or quantized(self, c, wg))

    def run() -> dict[str, torch.Tensor]:
        model = bert_supernet(dropout=0.1)
        architect = Architect(model, objective(model),
                              cfg=ArchitectConfig(optimizer="adam", lr=0.05, unrolled=unrolled))
        wopt = weight_optimizer(model, lr=1e-3)
        torch.manual_seed(1)
        _search_steps((model, architect, wopt), torch.Generator().manual_seed(0), range(3))
        return model.state_dict()

    shared = run()
    n_shared, calls[:] = len(calls), []
    monkeypatch.setattr(architect_module, "shared_candidates", lambda model: contextlib.nullcontext())
    fresh = run()
    assert all(torch.equal(shared[k], fresh[k]) for k in shared)
    per_pass = 3 * 12 * 3  # 3 steps x 12 searched matrices x 3 quantized choices (prune is a zero block)
    if unrolled:  # train at w, val at w', train at w+ and w-, weights at w restored: each a new weight version
        assert n_shared == len(calls) == 5 * per_pass
    else:
        assert (n_shared, len(calls)) == (per_pass, 2 * per_pass)


def test_architect_state_round_trip() -> None:
    model = bert_supernet()
    architect = Architect(model, objective(model), cfg=ArchitectConfig(optimizer="adam", lr=0.01))
    resample(model)
    architect.step(batch(1))
    restored = Architect(model, objective(model), cfg=ArchitectConfig(optimizer="adam", lr=0.01))
    restored.load_state_dict(architect.state_dict())
    s0, s1 = architect.optimizer.state_dict()["state"], restored.optimizer.state_dict()["state"]
    assert s0.keys() == s1.keys() and all(torch.equal(s0[k]["exp_avg"], s1[k]["exp_avg"]) for k in s0)


# --- toy problems ------------------------------------------------------------------------------


def toy(choices: tuple[int, ...]) -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    model = nn.Sequential(SupernetLinear.from_linear(lin, choices, num_subgroups=4, act_bits=None))
    set_relaxation(model, mode="softmax")
    w, b = lin.weight.detach().clone(), lin.bias.detach().clone()
    data = {}
    for name, seed in (("train", 1), ("val", 2)):
        x = torch.randn(32, 6, generator=torch.Generator().manual_seed(seed))
        data[name] = (x, x @ w.T + b)  # the fp32 layer is the teacher
    return model, data


def mse(model: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return (model(b[0]) - b[1]).pow(2).mean()


@pytest.mark.parametrize("unrolled", [False, True])
def test_toy_search_reduces_val_loss(unrolled: bool) -> None:
    model, data = toy((0, 2, 8))  # the true weights: 8 bits is best, prune is worst
    cfg = ArchitectConfig(optimizer="adam", lr=0.1, unrolled=unrolled)
    architect = Architect(model, mse, mse, cfg)
    first = mse(model, data["val"]).item()
    for _ in range(15):
        architect.step(data["val"], data["train"], xi=0.01)
    assert mse(model, data["val"]).item() < 0.5 * first
    assert model[0].argmax_bits().tolist() == [8, 8, 8, 8]


def test_unrolled_gradient_matches_exact_second_order() -> None:
    # choices {0, 32} make the supernet smooth, so DARTS's finite difference must match autograd.
    model, data = toy((0, 32))
    xi = 0.5
    with torch.no_grad():
        model[0].arch_logits.copy_(torch.randn(4, 2, generator=torch.Generator().manual_seed(3)))
    names = [n for n, p in model.named_parameters() if "arch_logits" not in n]
    params = dict(model.named_parameters())
    g = torch.autograd.grad(mse(model, data["train"]), [params[n] for n in names], create_graph=True)
    virtual = {n: params[n] - xi * gi for n, gi in zip(names, g)}
    x, y = data["val"]
    val = (functional_call(model, virtual, (x,)) - y).pow(2).mean()
    exact = torch.autograd.grad(val, model[0].arch_logits)[0]
    first_order = torch.autograd.grad(mse(model, data["val"]), model[0].arch_logits)[0]

    architect = Architect(model, mse, mse, ArchitectConfig(optimizer="sgd", lr=1.0, unrolled=True))
    before = model[0].arch_logits.detach().clone()
    architect.step(data["val"], data["train"], xi=xi)
    got = before - model[0].arch_logits.detach()
    torch.testing.assert_close(got, exact, rtol=2e-3, atol=1e-5)
    assert not torch.allclose(got, first_order, rtol=1e-2, atol=1e-4)  # the second-order term matters here
