"""Tests of QuantLinear, QuantEmbedding and ActQuant."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from amqs.quant.functions import quantize_subgroups, to_subgroups
from amqs.quant.modules import ActQuant, QuantEmbedding, QuantLinear


@pytest.fixture
def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(32, 16)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_from_linear_keeps_parameters(linear: nn.Linear) -> None:
    q = QuantLinear.from_linear(linear, [8, 4, 2, 0])
    assert isinstance(q, nn.Linear)
    assert q.weight is linear.weight and q.bias is linear.bias
    assert q.bits.dtype == torch.int64 and q.bits.tolist() == [8, 4, 2, 0]
    assert q.num_subgroups == 4 and q.rows_per_subgroup == 4
    assert {n for n, _ in q.named_parameters()} == {"weight", "bias"}
    assert "bits" in q.state_dict()
    r = repr(q)
    assert "subgroups=4" in r and "bits={0: 1, 2: 1, 4: 1, 8: 1}" in r


def test_from_linear_int_bits_and_errors(linear: nn.Linear) -> None:
    assert QuantLinear.from_linear(linear, 4, num_subgroups=8).bits.tolist() == [4] * 8
    assert QuantLinear.from_linear(linear, torch.tensor([8])).num_subgroups == 1
    with pytest.raises(ValueError, match=r"weight shape \(16, 32\).*16 rows cannot be split into 3"):
        QuantLinear.from_linear(linear, [8, 8, 8])
    with pytest.raises(ValueError, match=r"invalid bit-width\(s\) \[3\]"):
        QuantLinear.from_linear(linear, [8, 3])
    with pytest.raises(ValueError, match="unknown scheme"):
        QuantLinear.from_linear(linear, 8, scheme="foo")


def test_fp32_passthrough_is_exact(linear: nn.Linear) -> None:
    q = QuantLinear.from_linear(linear, [32, 32], act_bits=None)
    x = torch.randn(5, 32)
    assert torch.equal(q(x), linear(x))


@pytest.mark.parametrize("scheme", ["minmax", "symmetric", "twn", "lsq"])
def test_8bit_close_to_fp32(linear: nn.Linear, scheme: str) -> None:
    x = torch.randn(64, 32)
    ref = linear(x)
    q = QuantLinear.from_linear(linear, 8, scheme, act_bits=8, num_subgroups=4)
    q.train()
    q(x)  # one training batch initialises the activation range
    q.eval()
    # measured: 0.0086 (minmax/symmetric/twn); 0.047 for lsq, whose initial step
    # 2 mean|w| / sqrt(qmax) is coarse at 8 bits until it is learned
    assert _rel_err(q(x), ref) < (0.08 if scheme == "lsq" else 0.02)


def test_quantized_weight_uses_function_path(linear: nn.Linear) -> None:
    bits = torch.tensor([8, 4, 2, 1])
    q = QuantLinear.from_linear(linear, bits, "symmetric", act_bits=None)
    expected = quantize_subgroups(to_subgroups(linear.weight, 4), bits, "symmetric").reshape(16, 32)
    assert torch.equal(q.quantized_weight(), expected)
    x = torch.randn(3, 32)
    assert torch.equal(q(x), nn.functional.linear(x, expected, linear.bias))


def test_pruned_rows_output_bias(linear: nn.Linear) -> None:
    q = QuantLinear.from_linear(linear, [0, 8, 0, 4])
    w = q.quantized_weight()
    assert bool((w[0:4] == 0).all()) and bool((w[8:12] == 0).all())
    out = q(torch.randn(7, 32))
    bias = linear.bias.detach()
    assert torch.equal(out[:, 0:4], bias[0:4].expand(7, 4))
    assert torch.equal(out[:, 8:12], bias[8:12].expand(7, 4))


def test_gradients_reach_weight_bias_and_step(linear: nn.Linear) -> None:
    q = QuantLinear.from_linear(linear, [8, 4, 2, 1], "lsq", act_bits=4, act_symmetric=True, act_lsq=True)
    assert isinstance(q.step, nn.Parameter) and q.step.shape == (4,)
    assert {n for n, _ in q.named_parameters()} == {"weight", "bias", "step", "act_quant.step"}
    q(torch.randn(8, 32)).pow(2).sum().backward()
    for p in (linear.weight, linear.bias, q.step, q.act_quant.step):
        assert p.grad is not None and torch.isfinite(p.grad).all() and bool((p.grad != 0).any())


def test_set_bits(linear: nn.Linear) -> None:
    q = QuantLinear.from_linear(linear, [8, 8], "lsq")
    step = q.step
    before = q.step.detach().clone()
    q.set_bits([8, 2])
    assert q.step is step  # same Parameter: optimizers keep working
    assert q.step[0] == before[0] and q.step[1] != before[1]  # only the changed subgroup re-initialised
    q.set_bits([4, 4, 4, 4])
    assert q.num_subgroups == 4 and q.step.shape == (4,)
    with pytest.raises(ValueError):
        q.set_bits([4, 5])


def test_quant_embedding(linear: nn.Linear) -> None:
    emb = nn.Embedding(12, 8, padding_idx=0)
    q = QuantEmbedding.from_embedding(emb, [8, 0, 4], num_subgroups=3)
    assert q.weight is emb.weight and q.padding_idx == 0 and isinstance(q, nn.Embedding)
    ids = torch.tensor([[1, 5, 9]])
    out = q(ids)
    assert bool((out[0, 1] == 0).all())  # row 5 lies in the pruned block (rows 4..7)
    assert _rel_err(out[0, 0], emb(ids)[0, 0]) < 0.01
    assert torch.equal(out, nn.functional.embedding(ids, q.quantized_weight()))
    assert torch.equal(QuantEmbedding.from_embedding(emb, 32)(ids), emb(ids))
    with pytest.raises(ValueError, match="12 rows cannot be split into 5"):
        QuantEmbedding.from_embedding(emb, [8] * 5)


def test_act_quant_ema_train_vs_eval() -> None:
    aq = ActQuant(8, momentum=0.9)
    x1 = torch.linspace(-1.0, 2.0, 100)
    x2 = torch.linspace(-3.0, 4.0, 100)
    aq.train()
    aq(x1)
    assert (aq.running_min.item(), aq.running_max.item()) == (-1.0, 2.0)  # first batch initialises
    aq(x2)
    assert aq.running_min.item() == pytest.approx(0.9 * -1 + 0.1 * -3)
    assert aq.running_max.item() == pytest.approx(0.9 * 2 + 0.1 * 4)
    aq.eval()
    state = (aq.running_min.clone(), aq.running_max.clone())
    y = aq(x2 * 10)
    assert torch.equal(aq.running_min, state[0]) and torch.equal(aq.running_max, state[1])  # frozen
    # eval uses the running range: big inputs are clipped to it (up to a quantization step)
    assert y.min().item() >= -1.2 - 0.02 and y.max().item() <= 2.2 + 0.02
    levels = torch.unique(aq(torch.linspace(-5, 5, 10_000)))
    assert len(levels) <= 256


def test_act_quant_symmetric_and_identity() -> None:
    aq = ActQuant(8, symmetric=True).train()
    aq(torch.tensor([-0.5, 3.0]))
    assert (aq.running_min.item(), aq.running_max.item()) == (-3.0, 3.0)
    aq.eval()
    y = aq(torch.linspace(-3, 3, 1000))
    assert len(torch.unique(y)) <= 255 and torch.allclose(y, torch.linspace(-3, 3, 1000), atol=3 / 127)
    x = torch.randn(10)
    assert ActQuant(None)(x) is x and ActQuant(32)(x) is x


def test_act_quant_uninitialised_eval_uses_batch_range() -> None:
    aq = ActQuant(8).eval()
    x = torch.linspace(-1, 1, 50)
    assert torch.allclose(aq(x), x, atol=1 / 255 + 1e-6)
    assert not bool(aq.initialized)


def test_act_quant_lsq() -> None:
    aq = ActQuant(4, symmetric=True, lsq=True)
    x = torch.randn(4, 16)
    y = aq(x)
    assert bool(aq.initialized)
    assert aq.step.item() == pytest.approx(2 * x.abs().mean().item() / 7**0.5, rel=1e-5)
    assert len(torch.unique(y)) <= 15
    y.sum().backward()
    assert torch.isfinite(aq.step.grad)
    with pytest.raises(ValueError, match="symmetric=True"):
        ActQuant(4, lsq=True)
    with pytest.raises(ValueError, match="activation bits"):
        ActQuant(1)


def test_state_dict_roundtrip(linear: nn.Linear) -> None:
    q = QuantLinear.from_linear(linear, [8, 4])
    q.train()
    q(torch.randn(4, 32))
    fresh = QuantLinear(32, 16, bits=[2, 2])
    fresh.load_state_dict(q.state_dict())
    fresh.eval(), q.eval()
    x = torch.randn(3, 32)
    assert fresh.bits.tolist() == [8, 4] and torch.equal(fresh(x), q(x))
