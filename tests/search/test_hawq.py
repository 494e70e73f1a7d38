"""recipe=hawq: per-subgroup sensitivity, the exact allocation, sizes to the bit, the run end to end."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import amqs.search.run as search_run
from amqs.config import HawqConfig
from amqs.finetune import run as finetune
from amqs.quant import BitAssignment, apply_assignment, model_size
from amqs.search.app import run as search_app
from amqs.search.derive import derived_assignment
from amqs.search.hawq import hawq_assignment, hawq_search, solve_allocation, token_counts, unit_costs
from amqs.search.objective import Budget, resolve_budget, size_base
from amqs.search.space import load_space
from amqs.search.supernet import build_supernet, supernet_modules
from amqs.train.sensitivity import fisher_trace, hessian_trace, row_blocks, subgroup_quant_noise
from amqs.utils.cli import UserError, one_line
from amqs.utils.run import _HAWQ_DEFAULTS, config_hash
from tests.conftest import compose_cfg
from tests.search.test_supernet import embedding_space
from tests.tiny import batch, tiny_bert


def _brute_force(cost: np.ndarray, size: np.ndarray, cap: int) -> float:
    every = itertools.product(range(cost.shape[1]), repeat=len(cost))
    fits = (x for x in every if sum(size[u, c] for u, c in enumerate(x)) <= cap)
    return min(sum(cost[u, c] for u, c in enumerate(x)) for x in fits)


@pytest.mark.parametrize("solver, max_dp_bytes", [("dp", 1 << 30), ("milp", 0)])
def test_allocation_equals_brute_force(solver: str, max_dp_bytes: int) -> None:
    rng = np.random.default_rng(0)
    for trial in range(40):
        units, choices = int(rng.integers(1, 6)), int(rng.integers(2, 5))
        size = np.sort(rng.integers(0, 60, (units, choices)), 1)
        cost = rng.random((units, choices)) if trial % 2 else np.sort(rng.random((units, choices)), 1)[:, ::-1].copy()
        cost[0, -1] = np.inf if trial % 3 == 0 else cost[0, -1]  # a padded choice (a unit with fewer choices)
        ok = np.isfinite(cost)
        cap = int(rng.integers(np.where(ok, size, 10**9).min(1).sum(), np.where(ok, size, -1).max(1).sum() + 1))
        a = solve_allocation(cost, size, cap, max_dp_bytes=max_dp_bytes)
        assert a.cost == pytest.approx(_brute_force(cost, size, cap), abs=1e-12)
        assert a.size_bits == size[np.arange(units), a.choice].sum() <= cap
        assert a.solver in (solver, "bound")


def test_the_bound_keeps_the_optimum_of_a_large_problem() -> None:
    """Hundreds of units with the sizes of a real space: the dynamic program and HiGHS find the same optimum."""
    rng = np.random.default_rng(1)
    rows = rng.choice([1, 4], 300)[:, None] * 24
    size = rows * np.array([0, 2, 4, 8]) + np.array([0, 64, 64, 64])
    cost = rng.lognormal(0, 1.5, (300, 1)) * rows * np.array([1.0, 0.3, 0.02, 1e-4])
    cap = int(size[:, 2].sum() * 0.7)
    dp, ilp = solve_allocation(cost, size, cap), solve_allocation(cost, size, cap, max_dp_bytes=0)
    assert dp.solver == "dp" and ilp.solver == "milp" and 0 < dp.free_units < 300
    assert dp.cost == pytest.approx(ilp.cost, rel=1e-9) and dp.size_bits <= cap and ilp.size_bits <= cap


def test_an_infeasible_budget_fails_in_one_line_with_the_range() -> None:
    with pytest.raises(ValueError, match=r"infeasible: this search space's encoder takes 13 \.\. 15 bytes") as e:
        solve_allocation(np.zeros((2, 2)), np.array([[8, 16], [8, 16]]), 99, fixed_bits=88)
    assert "\n" not in str(e.value)
    teacher = tiny_bert()
    model = copy.deepcopy(teacher)
    build_supernet(model, load_space("default"))
    with pytest.raises(ValueError, match="outside the feasible range") as e:
        resolve_budget(Budget("compression", 1000.0), model)
    assert one_line(e.value) == str(e.value)


def test_per_subgroup_traces_add_up_to_the_tensor_trace() -> None:
    teacher = tiny_bert()
    names = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.intermediate.dense"]
    params = {n: teacher.get_submodule(n).weight for n in names}
    batches = [batch(0), batch(1)]
    loss = lambda m, b: m(**b).loss  # noqa: E731
    whole = hessian_trace(teacher, params, batches, loss, probes=3, seed=5)
    blocks = hessian_trace(teacher, params, batches, loss, probes=3, seed=5, reduce=row_blocks({n: 8 for n in names}))
    fisher, fisher_blocks = (fisher_trace(teacher, params, batches, loss, reduce=r)
                             for r in (None, row_blocks({n: 4 for n in names})))
    for n in names:
        assert blocks[n].shape == (8,) and float(blocks[n].sum()) == pytest.approx(whole[n], rel=1e-4, abs=1e-6)
        assert float(fisher_blocks[n].sum()) == pytest.approx(fisher[n], rel=1e-5)


def test_per_subgroup_trace_of_a_quadratic_is_the_analytic_diagonal() -> None:
    lin = nn.Linear(3, 6, bias=False)
    d = torch.arange(1.0, 19.0).reshape(6, 3)  # loss = 1/2 sum d w^2: H = diag(d), exact with Rademacher probes
    t = hessian_trace(lin, {"w": lin.weight}, [{}], lambda m, _: 0.5 * (d * m.weight ** 2).sum(), probes=2,
                      reduce=row_blocks({"w": 3}))
    assert t["w"].tolist() == pytest.approx(d.reshape(3, -1).sum(1).tolist())


def _allocated(space_name: str, compression: float = 13.0):
    teacher = tiny_bert()
    model = copy.deepcopy(teacher)
    space = load_space(space_name)
    build_supernet(model, space)
    target = resolve_budget(Budget("compression", compression), model, space.encoder_prefix)
    cost, size, _ = unit_costs(teacher, model, [batch(0, n=8), batch(1, n=8)], "hessian", probes=2)
    fixed = size_base(model, space.encoder_prefix).fixed_bits
    a = solve_allocation(cost, size, 8 * target, fixed_bits=fixed)
    meta = {"method": "hawq", "target_bytes": target}
    assignment = hawq_assignment(model, space, a.choice, fixed + a.size_bits, meta)
    return teacher, model, space, assignment, cost


@pytest.mark.parametrize("space_name", ["default", "structured", "aqbert"])
def test_budget_is_met_and_the_size_is_model_size(space_name: str) -> None:
    teacher, _, space, assignment, cost = _allocated(space_name)
    meta = assignment.meta
    assert meta["encoder_bits"] <= 8 * meta["target_bytes"] and meta["argmax_encoder_bytes"] == meta["encoder_bytes"]
    student = copy.deepcopy(teacher)
    apply_assignment(student, assignment)
    assert model_size(student, space.encoder_prefix).encoder_bits == meta["encoder_bits"]
    assert (cost >= 0).all()  # negative (noisy) traces are clamped: no choice is rewarded
    b = BitAssignment.from_dict(json.loads(json.dumps(assignment.to_dict())))
    assert b.modules == assignment.modules


def test_tied_heads_get_the_same_bits_and_prune_costs_the_weight_norm() -> None:
    teacher, model, _, assignment, cost = _allocated("structured", 16.0)
    for layer in range(2):
        qkv = [assignment.modules[f"bert.encoder.layer.{layer}.attention.self.{m}"].bits
               for m in ("query", "key", "value")]
        assert qkv[0] == qkv[1] == qkv[2]
    assert 0 in {b for mb in assignment.modules.values() for b in mb.bits}  # something is pruned at 16x
    # unit 0 is layer 0's first head (Q/K/V tied): prune costs s * ||W||^2 over the three matrices
    mods = supernet_modules(model)
    names = [f"bert.encoder.layer.0.attention.self.{m}" for m in ("query", "key", "value")]
    norm = sum(float(subgroup_quant_noise(mods[n].weight, mods[n].num_subgroups, 0, "minmax")[0]) for n in names)
    assert norm == pytest.approx(sum(float(mods[n].weight.detach()[:16].double().pow(2).sum()) for n in names))
    assert cost[0, 0] == 0 or cost[0, 0] / norm == pytest.approx(cost[0, 1] / sum(
        float(subgroup_quant_noise(mods[n].weight, 4, 2, "minmax")[0]) for n in names))


def test_hawq_settings_are_hashed_only_when_changed() -> None:
    assert _HAWQ_DEFAULTS == dataclasses.asdict(HawqConfig())
    cfg = compose_cfg("search", ["recipe=hawq", "debug=smoke"])
    assert cfg.search.method == "hawq" and cfg.search.space == "default" and cfg.budget.value == 13.0
    assert cfg.name == "sst2-bert-tiny-hawq-default-compression13.0"
    darts = compose_cfg("search", ["debug=smoke"])
    legacy = OmegaConf.create(OmegaConf.to_container(darts, resolve=True))  # untyped: a key can go
    del legacy.search["hawq"]  # a config saved before search.hawq existed
    assert config_hash(legacy) == config_hash(darts)
    assert config_hash(compose_cfg("search", ["debug=smoke", "search.hawq.probes=8"])) != config_hash(darts)


@pytest.mark.slow
def test_recipe_hawq_end_to_end(tmp_path: Path, glue_dir: Path) -> None:
    overrides = ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}"]
    finetune(compose_cfg("finetune", overrides))  # the tiny teacher
    cfg = compose_cfg("search", overrides + ["recipe=hawq", "search.hawq.batches=2", "search.hawq.probes=2"])
    metrics = search_app(cfg, command="test")
    out = tmp_path / "runs" / cfg.name
    bits = BitAssignment.from_json(out / "bits.json")
    assert bits.meta["method"] == "hawq" and bits.meta["repair_steps"] == 0 and bits.meta["solver"]["status"]
    assert bits.meta["sensitivity"]["measure"] == "fisher" and bits.meta["sensitivity"]["batches"] == 2
    assert bits.meta["encoder_bytes"] <= bits.meta["target_bytes"] + 1
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["encoder_bytes"] == metrics["derived_encoder_bytes"] == bits.meta["encoder_bytes"]
    assert metrics["search_seconds"] == bits.meta["search_seconds"] > 0 and not (out / "search_log.jsonl").exists()
    assert search_app(cfg) == metrics  # a finished run is reused


def test_the_hawq_prior_biases_the_search_toward_the_exact_allocation(tmp_path: Path, glue_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}"]
    finetune(compose_cfg("finetune", overrides))
    hawq = hawq_search(compose_cfg("search", overrides + ["recipe=hawq", "search.hawq.batches=2"]))
    cfg = compose_cfg("search", overrides + ["search.prior=hawq", "search.hawq.batches=2", "search.init_bias=3"])
    seen = {}
    monkeypatch.setattr(search_run, "_restore_or_start", lambda s, *a: seen.update(
        bits=derived_assignment(s.model, load_space(cfg.search.space)).modules))
    monkeypatch.setattr(search_run, "_step_loop", lambda *a: None)
    monkeypatch.setattr(search_run, "_derive", lambda *a: None)
    out = tmp_path / "prior"
    out.mkdir()
    search_run.search(cfg, out)
    # before any search step, the argmax of the logits is the HAWQ allocation
    assert {n: m.bits for n, m in seen["bits"].items()} == {n: m.bits for n, m in hawq.modules.items()}
    with pytest.raises(UserError, match="search.prior"):
        search_run.search(compose_cfg("search", overrides + ["search.prior=fisher"]), out)


def test_embedding_sensitivity_is_the_measured_total_shared_by_token_frequency() -> None:
    teacher = tiny_bert()
    model = copy.deepcopy(teacher)
    build_supernet(model, embedding_space())  # the word table in 10 blocks of 10 token rows over {2, 4, 8}
    batches = [batch(0), batch(1)]
    loader = [{"input_ids": torch.tensor([[5, 5, 5, 15, 0]]), "attention_mask": torch.tensor([[1, 1, 1, 1, 0]])}]
    counts = token_counts(loader, 100)
    assert counts[5] == 3 and counts[15] == 1 and counts.sum() == 4  # padding excluded
    plain, _, _ = unit_costs(teacher, model, batches, "fisher")
    shared, _, _ = unit_costs(teacher, model, batches, "fisher", token_counts=counts)
    word, rest = slice(0, 10), slice(10, None)  # the table's units come first (model order: arch_groups)
    noise = torch.stack([subgroup_quant_noise(teacher.bert.embeddings.word_embeddings.weight, 10, b, "minmax")
                         for b in (2, 4, 8)], 1).numpy()
    total = (plain[word, 0] / noise[:, 0]).sum()  # the measured Fisher per weight, summed over the blocks
    per_weight = shared[word, 0] / noise[:, 0]
    assert per_weight[0] == pytest.approx(0.75 * total) and per_weight[1] == pytest.approx(0.25 * total)
    assert (shared[word][2:, :3] == 0).all()  # blocks whose tokens never occur cost nothing at any choice
    np.testing.assert_array_equal(shared[rest], plain[rest])  # the encoder's units unchanged
