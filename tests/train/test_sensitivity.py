"""Q-BERT allocation: Hessian-trace sensitivity, monotone bits, the budget met to the bit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from amqs.config import MixedConfig
from amqs.models.family import family_of
from amqs.quant import apply_assignment, model_size, uniform_assignment
from amqs.search.objective import Budget
from amqs.train.sensitivity import allocate_bits, fisher_trace, hessian_trace, mixed_assignment, unit_of
from tests.tiny import batch, tiny_bert, tiny_model


def test_hutchinson_matches_the_exact_trace() -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    params = {"0": mlp[0].weight, "2": mlp[2].weight}

    def loss(m, _):
        return nn.functional.cross_entropy(m(x), y)

    def f(w0, w2):
        return nn.functional.cross_entropy(torch.func.functional_call(mlp, {"0.weight": w0, "2.weight": w2}, (x,)), y)

    blocks = torch.autograd.functional.hessian(f, tuple(p.detach() for p in params.values()))
    h = torch.cat([torch.cat([b.reshape(12 if i == 0 else 8, -1) for b in row], 1) for i, row in enumerate(blocks)])
    rows = {"0": slice(0, 12), "2": slice(12, 20)}  # the joint Hessian, 20 x 20
    # The estimator's own Rademacher probes: per tensor it computes exactly mean_v v_t^T (H v)_t ...
    g = torch.Generator().manual_seed(3)
    probes = [torch.cat([(torch.randint(0, 2, p.shape, generator=g) * 2 - 1).flatten() for p in params.values()])
              for _ in range(8)]
    est = hessian_trace(mlp, params, [{}], loss, probes=8, seed=3)
    for name, r in rows.items():
        expected = sum(float(v.float()[r] @ (h @ v.float())[r]) for v in probes) / 8
        assert est[name] == pytest.approx(expected, rel=1e-4)
    # ... which converges to the block's trace (within 4 sd: var = 2 sum of its rows' off-diagonal H^2 / probes)
    n = 4000
    est = hessian_trace(mlp, params, [{}], loss, probes=n, seed=1)
    for name, r in rows.items():
        block = h[r]
        off = block.pow(2).sum() - h.diag()[r].pow(2).sum()
        assert abs(est[name] - h.diag()[r].sum().item()) < 4 * (2 * off / n).sqrt().item()


def test_fisher_is_the_squared_gradient() -> None:
    lin = nn.Linear(3, 1, bias=False)
    x = torch.randn(5, 3)
    f = fisher_trace(lin, {"w": lin.weight}, [{}], lambda m, _: m(x).pow(2).mean())
    (g,) = torch.autograd.grad(lin(x).pow(2).mean(), lin.weight)
    assert f["w"] == pytest.approx(g.pow(2).sum().item())


def test_allocation_is_monotone_meets_the_budget_and_minimises_omega() -> None:
    cost = {u: {2: 2, 4: 4, 8: 8} for u in "abc"}
    noise = {u: {2: 16.0, 4: 4.0, 8: 0.0} for u in "abc"}
    sens = {"a": 0.1, "b": 3.0, "c": 1.0}
    assert allocate_bits(sens, cost, noise, fixed_bits=10, target_bits=100) == {"a": 8, "b": 8, "c": 8}
    bits = allocate_bits(sens, cost, noise, fixed_bits=10, target_bits=24)
    assert bits == {"a": 2, "b": 8, "c": 4}  # 10 + 14 <= 24, the most sensitive layer keeps 8 bits
    assert allocate_bits(sens, cost, noise, fixed_bits=10, target_bits=16) == {"a": 2, "b": 2, "c": 2}
    with pytest.raises(ValueError, match="infeasible.*2 .. 5 bytes"):
        allocate_bits(sens, cost, noise, fixed_bits=10, target_bits=15)


def test_units() -> None:
    assert unit_of("bert.encoder.layer.11.output.dense", "layer") == "bert.encoder.layer.11"
    assert unit_of("bert.encoder.layer.1.output.dense", "matrix") == "bert.encoder.layer.1.output.dense"
    with pytest.raises(ValueError, match="granularity"):
        unit_of("x", "head")


def _uniform(model: nn.Module):
    return uniform_assignment(model, bits=8, num_subgroups={r".*intermediate\.dense": 128, ".*": 64},
                              act_bits=8, embedding_bits=8)


def test_known_sensitivity_ranks_layers_and_fits_the_budget() -> None:
    model = tiny_bert()
    scale = {"bert.encoder.layer.0": 1.0, "bert.encoder.layer.1": 50.0}  # layer 1: 50x the curvature

    def quadratic(m, _):  # Hessian diag = 2 * scale per weight: trace / n is exactly 2 * scale
        return sum(scale[unit_of(n, "layer")] * p.pow(2).sum() for n, p in m.named_parameters()
                   if n.startswith("bert.encoder.layer.") and n.endswith("weight") and p.ndim == 2)

    a = mixed_assignment(model, _uniform(model), [{}], MixedConfig(batches=1, probes=1), Budget("avg_bits", 5.0),
                         loss_fn=quadratic)
    per_unit = a.meta["sensitivity"]["per_unit"]
    assert per_unit == pytest.approx({u: 2 * s for u, s in scale.items()})
    assert a.meta["unit_bits"] == {"bert.encoder.layer.0": 2, "bert.encoder.layer.1": 8}
    student = tiny_bert()
    apply_assignment(student, a)
    measured = model_size(student).encoder_bytes
    assert measured == a.meta["encoder_bytes"] <= a.meta["target_bytes"]


def test_hessian_on_bert_gives_a_monotone_assignment_within_budget() -> None:
    model = tiny_bert()
    before = {n: p.clone() for n, p in model.state_dict().items()}
    cfg = MixedConfig(batches=2, probes=1, granularity="matrix")
    a = mixed_assignment(model, _uniform(model), [batch(0), batch(1)], cfg, Budget("avg_bits", 4.0))
    sens, bits = a.meta["sensitivity"]["per_unit"], a.meta["unit_bits"]
    assert len(bits) == 12 and set(bits.values()) <= {2, 4, 8}
    order = sorted(sens, key=lambda u: -sens[u])
    assert [bits[u] for u in order] == sorted(bits.values(), reverse=True)  # more sensitive, more bits
    assert a.meta["encoder_bytes"] <= a.meta["target_bytes"]
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())  # the teacher is untouched
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="infeasible"):
        mixed_assignment(model, _uniform(model), [batch(0)], cfg, Budget("compression", 1000.0))


@pytest.mark.parametrize("model_type", ["roberta", "distilbert"])
def test_qbert_units_are_the_layers_of_every_family(model_type: str) -> None:
    model = tiny_model(model_type)
    cfg = MixedConfig(batches=1, probes=1, sensitivity="fisher")
    a = mixed_assignment(model, _uniform(model), [batch(0)], cfg, Budget("avg_bits", 4.0))
    base = family_of(model).encoder
    assert sorted(a.meta["unit_bits"]) == [f"{base}.layer.0", f"{base}.layer.1"]
    assert a.meta["encoder_bytes"] <= a.meta["target_bytes"]
