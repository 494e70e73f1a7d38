"""SupernetLinear and SupernetEmbedding numerics against fixed QuantLinears and loop references; ties; relaxation; schedule."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from amqs.quant.functions import quantize_subgroups, to_subgroups
from amqs.quant.modules import QuantEmbedding, QuantLinear
from amqs.search.space import SearchSpace, load_space, space_from_dict
from amqs.search.supernet import (
    SupernetEmbedding,
    SupernetLinear,
    TemperatureSchedule,
    arch_entropy,
    arch_entropy_term,
    arch_parameters,
    build_supernet,
    entropy_fraction,
    resample,
    set_relaxation,
    shared_candidates,
    supernet_modules,
    weight_parameters,
)
from tests.tiny import batch, tiny_bert

CHOICES = (0, 2, 4, 8)


def one_hot_logits(bits: list[int], choices: tuple[int, ...] = CHOICES) -> torch.Tensor:
    idx = torch.tensor([choices.index(b) for b in bits])
    # exp(-1e4) underflows to exactly 0, so the softmax is exactly one-hot.
    return torch.where(torch.nn.functional.one_hot(idx, len(choices)).bool(), 0.0, -1e4)


@pytest.mark.parametrize("scheme", ["minmax", "symmetric", "twn", "lsq"])
def test_one_hot_equals_fixed_quantlinear(scheme: str) -> None:
    torch.manual_seed(0)
    lin, bits = nn.Linear(16, 8), [8, 0, 2, 4]
    sn = SupernetLinear.from_linear(copy.deepcopy(lin), CHOICES, num_subgroups=4, scheme=scheme)
    with torch.no_grad():
        sn.arch_logits.copy_(one_hot_logits(bits))
    set_relaxation(sn, mode="softmax")
    ref = QuantLinear.from_linear(lin, bits, scheme)
    x = torch.randn(5, 16)
    assert torch.equal(sn.mixed_weight(), ref.quantized_weight())
    assert torch.equal(sn(x), ref(x))  # activations: same fresh ActQuant, same first-batch range
    assert torch.equal(sn.argmax_bits(), torch.tensor(bits))


def test_vectorized_candidates_equal_loop_reference() -> None:
    torch.manual_seed(1)
    sn = SupernetLinear.from_linear(nn.Linear(12, 16), CHOICES, num_subgroups=8)
    set_relaxation(sn, mode="softmax", tau=0.7)
    with torch.no_grad():
        sn.arch_logits.normal_()
    wg = to_subgroups(sn.weight, 8)
    cands = sn.candidate_weights()
    for c, b in enumerate(CHOICES):
        assert torch.equal(cands[c], quantize_subgroups(wg, torch.full((8,), b)))
    p = torch.softmax(sn.arch_logits / 0.7, -1)
    ref = torch.stack([sum(p[g, c] * cands[c, g] for c in range(len(CHOICES))) for g in range(8)])
    torch.testing.assert_close(sn.mixed_weight(), ref.reshape(16, 12), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("scheme", ["minmax", "symmetric", "twn"])
@pytest.mark.parametrize("choices", [CHOICES, (2, 4, 8), (0, 32)])
def test_mix_is_bit_identical_to_autograd_through_the_candidates(scheme: str, choices: tuple[int, ...]) -> None:
    """The constant-candidate mix gives what autograd gave through the candidates' graph, bit for bit."""
    torch.manual_seed(5)
    sn = SupernetLinear.from_linear(nn.Linear(96, 64), choices, num_subgroups=16, scheme=scheme)
    set_relaxation(sn, mode="softmax", tau=0.7)
    with torch.no_grad():
        sn.arch_logits.normal_()
    reference = torch.einsum("gc,cgn->gn", sn.probs(), sn.candidate_weights()).reshape(64, 96)
    mixed = sn.mixed_weight()
    assert torch.equal(mixed, reference)
    upstream = torch.randn(64, 96)
    for got, want in zip(torch.autograd.grad(mixed, [sn.weight, sn.arch_logits], upstream),
                         torch.autograd.grad(reference, [sn.weight, sn.arch_logits], upstream)):
        assert torch.equal(got, want)


def test_shared_candidates_are_quantized_once_per_weight_value(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(6)
    sn = SupernetLinear.from_linear(nn.Linear(12, 16), CHOICES, num_subgroups=8)
    calls: list[int] = []
    quantized = SupernetLinear._quantized
    monkeypatch.setattr(SupernetLinear, "_quantized", lambda self, c, wg: calls.append(c) or quantized(self, c, wg))
    x = torch.randn(3, 12)
    plain = sn(x)
    assert calls == [1, 2, 3]  # the prune candidate (choice 0) is never quantized
    with shared_candidates(sn):
        assert torch.equal(sn(x), plain) and torch.equal(sn(x), plain) and len(calls) == 6  # once, reused
        with torch.no_grad():
            sn.weight.mul_(0.5)  # an in-place change: recomputed
        halved = sn(x)
        assert len(calls) == 9 and not torch.equal(halved, plain)
    assert sn._shared is None and not sn.share_candidates  # released on exit
    sn(x)
    assert len(calls) == 12


def test_gradients_reach_weights_and_logits() -> None:
    torch.manual_seed(2)
    sn = SupernetLinear.from_linear(nn.Linear(8, 4), CHOICES, num_subgroups=2)
    resample(sn)
    sn(torch.randn(3, 8)).pow(2).sum().backward()
    for p in (sn.weight, sn.bias, sn.arch_logits):
        assert p.grad is not None and p.grad.abs().sum() > 0
    # the prune candidate contributes no gradient to the weights: all-prune subgroups get none
    sn.zero_grad()
    with torch.no_grad():
        sn.arch_logits.copy_(one_hot_logits([0, 8]))
    set_relaxation(sn, mode="softmax")
    sn(torch.randn(3, 8)).pow(2).sum().backward()
    assert sn.weight.grad[:2].abs().sum() == 0 and sn.weight.grad[2:].abs().sum() > 0


def test_supernet_model_forward_backward_and_parameter_split() -> None:
    model = tiny_bert()
    names = build_supernet(model, load_space("default"))
    assert len(names) == 12 and set(supernet_modules(model)) == set(names)
    assert isinstance(model.bert.embeddings.word_embeddings, QuantEmbedding)
    assert model.bert.embeddings.word_embeddings.bits.tolist() == [8]
    arch, weights = arch_parameters(model), weight_parameters(model)
    assert {id(p) for p in arch}.isdisjoint(id(p) for p in weights)
    assert len(arch) + len(weights) == len(list(model.parameters()))
    resample(model)
    model(**batch(0)).loss.backward()
    assert all(p.grad is not None for p in arch)
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad is not None
    with pytest.raises(ValueError, match="already searched"):
        build_supernet(model, load_space("default"))


def test_tied_modules_share_logits_and_noise() -> None:
    model = tiny_bert()
    build_supernet(model, load_space("structured"))
    att = model.bert.encoder.layer[1].attention.self
    assert att.query.arch_logits is att.key.arch_logits is att.value.arch_logits
    assert att.query.arch_logits is not model.bert.encoder.layer[0].attention.self.query.arch_logits
    resample(model, torch.Generator().manual_seed(0))
    assert att.query.noise is att.key.noise is att.value.noise
    assert torch.equal(att.query.probs(), att.value.probs())
    # a checkpoint round trip into a freshly built supernet keeps the tie
    state = model.state_dict()
    fresh = tiny_bert(seed=3)
    build_supernet(fresh, load_space("structured"))
    fresh.load_state_dict(state)
    fatt = fresh.bert.encoder.layer[1].attention.self
    assert fatt.query.arch_logits is fatt.key.arch_logits
    assert torch.equal(fatt.key.arch_logits, att.key.arch_logits)


def test_gumbel_noise_only_in_training_and_gumbel_mode() -> None:
    torch.manual_seed(4)
    sn = SupernetLinear.from_linear(nn.Linear(8, 4), CHOICES, num_subgroups=4)
    clean = torch.softmax(sn.arch_logits, -1)
    assert torch.equal(sn.probs(), clean)  # no noise drawn yet
    resample(sn, torch.Generator().manual_seed(0))
    noisy = sn.probs()
    assert not torch.allclose(noisy, clean)
    resample(sn, torch.Generator().manual_seed(0))
    assert torch.equal(sn.probs(), noisy)  # seeded: reproducible
    sn.eval()
    assert torch.equal(sn.probs(), clean)
    sn.train()
    set_relaxation(sn, mode="softmax", tau=2.0)
    assert torch.allclose(sn.probs(), torch.softmax(sn.arch_logits / 2.0, -1))
    with pytest.raises(ValueError, match="unknown relaxation mode"):
        set_relaxation(sn, mode="hard")


def test_temperature_schedule() -> None:
    s = TemperatureSchedule(t0=5.0, eta=0.5, n0=2.0, t_min=0.5)
    assert s(0.0) == s(1.5) == s(2.0) == 5.0  # held at t0 before N0
    assert s(3.0) == pytest.approx(5.0 * math.exp(-0.5))
    assert s(4.5) == pytest.approx(5.0 * math.exp(-1.25))
    assert s(100.0) == 0.5  # floor
    with pytest.raises(TypeError):  # t0 and eta come from the search config, their one home
        TemperatureSchedule()


def test_arch_entropy() -> None:
    model = nn.Sequential(SupernetLinear.from_linear(nn.Linear(4, 4), CHOICES, 2, init_std=0.0))
    assert arch_entropy(model) == pytest.approx(math.log(4))
    with torch.no_grad():
        model[0].arch_logits.copy_(one_hot_logits([8, 8]))
    assert arch_entropy(model) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="build_supernet"):
        arch_entropy(nn.Linear(2, 2))


def test_hard_samples_are_one_hot_forward_and_soft_backward() -> None:
    torch.manual_seed(5)
    sn = SupernetLinear.from_linear(nn.Linear(8, 4), CHOICES, num_subgroups=4)
    resample(sn, torch.Generator().manual_seed(1))
    set_relaxation(sn, tau=0.7)
    soft = sn.probs()
    set_relaxation(sn, hard=True)
    hard = sn.probs()
    assert torch.equal(hard.detach().argmax(-1), soft.detach().argmax(-1))
    assert torch.allclose(hard.detach(), torch.nn.functional.one_hot(soft.argmax(-1), 4).float(), atol=1e-6)
    # the weights see the sampled discrete network: the mix is that choice's candidate
    chosen = sn.candidate_weights().detach()[soft.argmax(-1), torch.arange(4)].reshape(4, 8)
    assert torch.allclose(sn.mixed_weight().detach(), chosen, atol=1e-6)
    g = torch.randn(4, 4)
    (ghard,) = torch.autograd.grad((hard * g).sum(), sn.arch_logits)
    set_relaxation(sn, hard=False)
    (gsoft,) = torch.autograd.grad((sn.probs() * g).sum(), sn.arch_logits)
    assert torch.allclose(ghard, gsoft)  # straight-through: the soft sample's gradient
    set_relaxation(sn, hard=True)
    sn.eval()
    assert torch.equal(sn.probs(), torch.softmax(sn.arch_logits / 0.7, -1))  # hard only in training


def test_temperature_over_the_search_length() -> None:
    s = TemperatureSchedule(t0=1.0, eta=2.0, t_final=0.05, epochs=0.5, t_min=0.01)
    assert s(0.0) == 1.0 and s(0.5) == pytest.approx(0.05) and s(2.0) == pytest.approx(0.05)
    assert s(0.25) == pytest.approx(math.sqrt(0.05))  # geometric: halfway in log
    with pytest.raises(ValueError, match="length"):
        TemperatureSchedule(t0=1.0, eta=2.0, t_final=0.05)(0.1)


def test_entropy_fraction_and_entropy_term() -> None:
    model = nn.Sequential(SupernetLinear.from_linear(nn.Linear(4, 4), CHOICES, 2, init_std=0.0))
    assert entropy_fraction(model) == pytest.approx(1.0)
    term = arch_entropy_term(model)
    assert term.item() == pytest.approx(math.log(4))
    with torch.no_grad():
        model[0].arch_logits.copy_(one_hot_logits([8, 8]))
    assert entropy_fraction(model) == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        model[0].arch_logits.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    arch_entropy_term(model).backward()
    grad = model[0].arch_logits.grad
    assert grad[0, 0] < 0 and torch.allclose(grad[1], torch.zeros(4), atol=1e-7)  # raising the top lowers H


def test_supernet_embedding_rows_and_only_looked_up_blocks_learn() -> None:
    emb = nn.Embedding(12, 4, padding_idx=0)
    m = SupernetEmbedding.from_embedding(emb, (2, 4, 8), num_subgroups=3)  # blocks of 4 token rows
    assert m.weight is emb.weight and m.padding_idx == 0
    ids = torch.tensor([[1, 5, 6]])  # blocks 0 and 1; block 2 (rows 8..11) never looked up
    with torch.no_grad():
        m.arch_logits.copy_(one_hot_logits([4, 8, 2], (2, 4, 8)))
    table = torch.cat([quantize_subgroups(to_subgroups(emb.weight[4 * g:4 * g + 4].detach(), 1), torch.tensor([b]),
                                          "minmax").reshape(4, 4) for g, b in enumerate([4, 8, 2])])
    m.eval()
    torch.testing.assert_close(m(ids), table[ids], rtol=0, atol=0)
    assert m.argmax_bits().tolist() == [4, 8, 2]
    m.train()
    with torch.no_grad():
        m.arch_logits.zero_()
    m(ids).pow(2).sum().backward()
    g = m.arch_logits.grad
    assert g[:2].abs().sum() > 0 and g[2].abs().sum() == 0
    grad_rows = emb.weight.grad.abs().sum(1)
    assert (grad_rows[[5, 6]] > 0).all() and grad_rows[[0, 2, 3, 4, 7, 8, 9, 10, 11]].sum() == 0


def embedding_space() -> SearchSpace:
    """search_spaces/embeddings.yaml sized for the tiny BERT (100-token vocabulary: 10 blocks of 10 rows)."""
    return space_from_dict({"version": 1, "name": "emb", "choices": [0, 2, 4, 8], "groups": [
        {"name": "encoder", "modules": r"bert\.encoder\.layer\.\d+\..*(query|key|value|dense)",
         "subgroups": {"count": 8}},
        {"name": "word", "modules": r"bert\.embeddings\.word_embeddings", "subgroups": {"count": 10},
         "choices": [2, 4, 8]}]})


def test_build_supernet_searches_embedding_groups_and_fixes_the_others() -> None:
    space = embedding_space()
    model = tiny_bert()
    names = build_supernet(model, space)
    word = model.bert.embeddings.word_embeddings
    assert "bert.embeddings.word_embeddings" in names and isinstance(word, SupernetEmbedding)
    assert tuple(word.arch_logits.shape) == (10, 3) and word.size_table[0].tolist() == [
        10 * 64 * b + 40 for b in (2, 4, 8)]
    assert isinstance(model.bert.embeddings.position_embeddings, QuantEmbedding)  # fixed at embedding_bits
    assert "bert.embeddings.word_embeddings" in supernet_modules(model)
    model(**batch(0)).loss.backward()
    assert word.arch_logits.grad is not None
