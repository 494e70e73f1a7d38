"""Size accounting vs model_size, the budget kinds (encoder and whole-model), the piecewise size loss, and size-only arch steps."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from amqs.quant.size import model_size
from amqs.quant.surgery import apply_assignment
from amqs.search.architect import Architect, ArchitectConfig
from amqs.search.objective import (
    Budget,
    SearchObjective,
    argmax_size_bits,
    expected_size_bits,
    resolve_budget,
    size_base,
    size_bounds_bits,
    size_loss,
)
from amqs.search.derive import derived_assignment
from amqs.search.space import load_space
from amqs.search.supernet import arch_parameters, build_supernet, set_relaxation, supernet_modules
from tests.search.test_supernet import embedding_space
from tests.tiny import tiny_bert

# Tiny BERT encoder: per layer biases 4*64 + 128 + 64 = 448 and LayerNorms 4*64 = 256 (fp32), plus
# one 64-bit activation range per searched Linear (6 per layer).
FIXED_BITS = 2 * ((448 + 256) * 32 + 6 * 64)
WEIGHTS = 2 * (4 * 64 * 64 + 2 * 64 * 128)


def supernet(space: str = "aqbert", seed: int = 0) -> torch.nn.Module:
    model = tiny_bert(seed)
    build_supernet(model, load_space(space))
    set_relaxation(model, mode="softmax", tau=1.0)
    return model


def favour(model: torch.nn.Module, index: int, strength: float = 1.0) -> None:
    """Make choice ``index`` the argmax of every subgroup (logit ``strength``, the others 0)."""
    with torch.no_grad():
        for p in arch_parameters(model):
            p.zero_()
            p[:, index] = strength


def test_size_loss_piecewise_hand_values() -> None:
    v = 100.0
    assert size_loss(torch.tensor(200.0), 200, v).item() == pytest.approx(math.log(2))  # too big: log(E/V)
    assert size_loss(torch.tensor(50.0), 50, v).item() == pytest.approx(math.log(2))  # too small: -log(E/V)
    assert size_loss(torch.tensor(80.0), 104, v).item() == 0.0  # C inside [95, 105]: zero whatever E is
    assert size_loss(torch.tensor(80.0), 105, v).item() == 0.0  # band edges are inside
    assert size_loss(torch.tensor(80.0), 95, v).item() == 0.0
    assert size_loss(torch.tensor(120.0), 106, v).item() == pytest.approx(math.log(1.2))
    assert size_loss(torch.tensor(120.0), 94, v).item() == pytest.approx(-math.log(1.2))  # C decides the branch
    assert size_loss(torch.tensor(120.0), 94, v, eps=0.1).item() == 0.0
    e = torch.tensor(200.0, requires_grad=True)
    size_loss(e, 200, v).backward()
    assert e.grad.item() == pytest.approx(1 / 200)  # same gradient as the paper's log E[C]


def test_sizes_agree_with_model_size() -> None:
    fp32 = tiny_bert()
    model = supernet()
    base = size_base(model)
    assert base.fixed_bits == FIXED_BITS and base.searched_weights == WEIGHTS
    assert base.fp32_bits == model_size(fp32).fp32_encoder_bits
    lo, hi = size_bounds_bits(model)
    # aqbert on the tiny model: 64 subgroups of 1 row (Q, K, V, attn-out, FFN-out), 128 for FFN-in;
    # the largest choice is 4 bits + 40 qparam bits per subgroup, the smallest prunes everything.
    subgroups = 2 * (5 * 64 + 128)
    assert lo == FIXED_BITS and hi == FIXED_BITS + 4 * WEIGHTS + 40 * subgroups
    favour(model, 2)
    assert argmax_size_bits(model) == hi
    set_relaxation(model, mode="softmax", tau=1e-6)  # probabilities one-hot at the argmax
    assert expected_size_bits(model).item() == hi
    set_relaxation(model, mode="softmax", tau=1.0)
    manual = FIXED_BITS + sum(
        (torch.softmax(m.arch_logits, -1).double() * m.size_table).sum().item() for m in supernet_modules(model).values()
    )
    assert expected_size_bits(model).item() == pytest.approx(manual, rel=1e-12)


def test_budget_kinds_resolve() -> None:
    model = supernet()
    lo, hi = size_bounds_bits(model)
    assert resolve_budget(Budget("bytes", 30_000), model) == 30_000
    fp32_bytes = model_size(tiny_bert()).fp32_encoder_bits / 8
    assert resolve_budget(Budget("compression", 10.0), model) == pytest.approx(fp32_bytes / 10)
    assert resolve_budget(Budget("avg_bits", 4), model) == hi / 8  # = the all-4-bit model, qparams included
    subgroups = 2 * (5 * 64 + 128)
    assert resolve_budget(Budget("avg_bits", 2), model) == (FIXED_BITS + 2 * WEIGHTS + 40 * subgroups) / 8
    assert Budget("bytes", 1).to_dict() == {"kind": "bytes", "value": 1}


@pytest.mark.parametrize("budget", [Budget("compression", 1.0), Budget("bytes", 10), Budget("avg_bits", 6)])
def test_infeasible_budget(budget: Budget) -> None:
    with pytest.raises(ValueError, match=r"outside the feasible range \[\d+, \d+\] bytes"):
        resolve_budget(budget, supernet())


def test_budget_validation() -> None:
    with pytest.raises(ValueError, match="budget kind"):
        Budget("mb", 3.0)
    with pytest.raises(ValueError, match="positive"):
        Budget("bytes", 0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("start", [2, 0])
def test_size_only_arch_steps_move_toward_budget(start: int, optimizer: str) -> None:
    model = supernet()
    favour(model, start, strength=2.0)  # start near all-4-bit (too big) or all-pruned (too small)
    target = resolve_budget(Budget("avg_bits", 2.5), model)
    objective = SearchObjective(target_bytes=target, lam=1.0, task_loss=None)
    # The per-logit gradient of log(E/V) is ~1/(number of subgroups): SGD needs a large lr.
    lr = {"sgd": 100.0, "adam": 0.05}[optimizer]
    architect = Architect(model, objective, cfg=ArchitectConfig(optimizer=optimizer, lr=lr))
    expected = []
    for _ in range(10):
        expected.append(expected_size_bits(model).item() / 8)
        architect.step(None)
    expected.append(expected_size_bits(model).item() / 8)
    direction = -1.0 if start == 2 else 1.0
    assert (expected[0] - target) * direction < 0  # the start is on the far side
    steps = [direction * (b - a) for a, b in zip(expected, expected[1:])]
    assert all(d > 0 for d in steps)  # every step moves E[C] toward the target
    assert abs(expected[-1] - target) < 0.9 * abs(expected[0] - target)
    stats = objective.stats(model)
    assert set(stats) >= {"expected_bytes", "argmax_bytes", "target_bytes", "size_loss", "arch_entropy"}
    assert stats["size_loss"] > 0 and stats["in_budget"] == 0.0  # C is still all-4-bit / all-pruned


def test_objective_adds_task_loss() -> None:
    model = supernet()
    copy_ = copy.deepcopy(model)
    target = resolve_budget(Budget("avg_bits", 3.0), model)
    seen = []
    task = lambda m, b: seen.append(b) or torch.tensor(1.5)  # noqa: E731
    obj = SearchObjective(target_bytes=target, lam=2.0, task_loss=task)
    size_only = SearchObjective(target_bytes=target, task_loss=None)
    assert obj(model, "batch").item() == pytest.approx(1.5 + 2.0 * size_only(copy_, None).item())
    assert seen == ["batch"]


def test_size_only_step_inside_band_is_a_no_op() -> None:
    model = supernet()
    objective = SearchObjective(target_bytes=argmax_size_bits(model) / 8, task_loss=None)
    assert objective(model, None).item() == 0.0
    architect = Architect(model, objective, cfg=ArchitectConfig(optimizer="sgd", lr=1.0))
    before = [p.detach().clone() for p in architect.arch]
    architect.step(None)
    assert all(torch.equal(a, p) for a, p in zip(before, architect.arch))


def test_expected_size_loss_pulls_the_distribution_not_only_the_argmax() -> None:
    model = supernet("default")
    favour(model, 3, strength=1.0)  # argmax all-8-bit, but a spread distribution
    target = argmax_size_bits(model) / 8  # the argmax sits on the target: AQ-BERT's loss is silent
    assert SearchObjective(target_bytes=target, task_loss=None)(model, None).item() == 0.0
    objective = SearchObjective(target_bytes=target, task_loss=None, size_on="expected")
    committed = expected_size_bits(model, noise_free=True).item() / 8
    assert committed < 0.95 * target  # E[C] under softmax(alpha) is far below: the expected loss pushes it up
    assert objective(model, None).item() == pytest.approx(-math.log(committed / target))
    near = SearchObjective(target_bytes=committed * 1.02, task_loss=None, size_on="expected")
    assert near(model, None).item() == pytest.approx(math.log(1.02))  # no dead band: pulled to V itself
    stats = objective.stats(model)
    assert stats["expected_over_budget"] == pytest.approx(committed / target, rel=1e-6)
    assert 0.0 < stats["entropy_fraction"] < 1.0
    with pytest.raises(ValueError, match="size_on"):
        SearchObjective(target_bytes=target, size_on="median")


def test_entropy_term_is_added_with_its_ramp() -> None:
    model = supernet()
    target = argmax_size_bits(model) / 8
    base = SearchObjective(target_bytes=target, task_loss=None)(model, None).item()
    obj = SearchObjective(target_bytes=target, task_loss=None, entropy_weight=0.5)
    obj.entropy_scale = 0.4
    from amqs.search.supernet import arch_entropy
    assert obj(model, None).item() == pytest.approx(base + 0.5 * 0.4 * arch_entropy(model), rel=1e-5)


def test_searched_embeddings_need_a_whole_model_budget_and_size_exactly() -> None:
    space = embedding_space()
    model = tiny_bert()
    build_supernet(model, space)
    with pytest.raises(ValueError, match="outside encoder_prefix.*whole-model budget"):
        resolve_budget(Budget("compression", 8.0), model, space.encoder_prefix)
    fp32 = model_size(tiny_bert())
    target = resolve_budget(Budget("total_compression", 6.0), model, space.encoder_prefix)
    assert target == pytest.approx(fp32.fp32_total_bits / 8 / 6.0)
    assert resolve_budget(Budget("total_bytes", 60_000), model, space.encoder_prefix) == 60_000
    with pytest.raises(ValueError, match="total bytes, outside the feasible range"):
        resolve_budget(Budget("total_compression", 100.0), model, space.encoder_prefix)
    derived = derived_assignment(model, space, Budget("total_compression", 6.0))
    word = derived.modules["bert.embeddings.word_embeddings"]
    assert (word.kind, word.num_subgroups, set(word.bits) <= {2, 4, 8}) == ("embedding", 10, True)
    fresh = tiny_bert()
    apply_assignment(fresh, derived)
    size = model_size(fresh)
    assert derived.meta["size_scope"] == "total" and size.total_bits == derived.meta["encoder_bits"]
    assert size.total_bytes <= 1.05 * target
