"""Ternary weight splitting (BinaryBERT): the binary split computes exactly what the ternary model did."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from amqs.quant import extract_assignment, model_size, quantize_subgroups, to_subgroups, uniform_assignment
from amqs.quant.modules import QuantLinear
from amqs.quant.split import TwinQuantLinear, split_ternary_linears, tws_split
from amqs.quant.surgery import apply_assignment
from tests.tiny import batch, tiny_bert


def _ternary(w: torch.Tensor, g: int) -> torch.Tensor:
    return quantize_subgroups(to_subgroups(w, g), torch.full((g,), 2), "twn").reshape(w.shape)


def _binary(w: torch.Tensor, g: int) -> torch.Tensor:
    return quantize_subgroups(to_subgroups(w, g), torch.full((g,), 1), "twn").reshape(w.shape)


@pytest.mark.parametrize("g", [1, 4, 32])
def test_binarized_halves_sum_to_the_ternary_weights(g: int) -> None:
    w = torch.randn(32, 48, generator=torch.Generator().manual_seed(g)) * 0.05
    w1, w2 = tws_split(w, g)
    assert torch.allclose(_binary(w1, g) + _binary(w2, g), _ternary(w, g), atol=1e-7)
    # the twin module's single scale per row subgroup over [w1 | w2] gives the same binary weights
    both = _binary(torch.cat([w1, w2], 1), g)
    assert torch.allclose(both[:, :48] + both[:, 48:], _ternary(w, g), atol=1e-7)
    assert (w1 != 0).all() and (w2 != 0).all()  # no sign(0) ambiguity


def test_twin_linear_equals_the_ternary_linear() -> None:
    torch.manual_seed(0)
    q = QuantLinear.from_linear(nn.Linear(24, 16), 2, "twn", act_bits=8, act_symmetric=True, num_subgroups=4)
    x = torch.randn(5, 7, 24)
    q.train()(x)  # calibrate the activation range
    q.eval()
    twin = TwinQuantLinear.from_ternary(q).eval()
    assert twin.weight.shape == (16, 48) and twin.bits.tolist() == [1] * 4 and twin.bias is q.bias
    assert torch.allclose(twin(x), q(x), atol=1e-5)
    with pytest.raises(ValueError, match="ternary"):
        TwinQuantLinear.from_ternary(QuantLinear.from_linear(nn.Linear(4, 4), 4, "twn"))


def test_split_bert_is_equivalent_and_same_size() -> None:
    model = tiny_bert().eval()
    a = uniform_assignment(model, bits=2, num_subgroups=1, scheme="twn", act_bits=8, embedding_bits=8)
    apply_assignment(model, a, act_symmetric=True)
    inputs = {k: v for k, v in batch(3).items() if k != "labels"}
    model.train()(**inputs)  # activation ranges
    model.eval()
    with torch.no_grad():
        before = model(**inputs).logits
        bits_before = model_size(model).encoder_bits
        names = split_ternary_linears(model)
        after = model(**inputs).logits
    assert len(names) == 12 and all(isinstance(model.get_submodule(n), TwinQuantLinear) for n in names)
    assert torch.allclose(after, before, atol=1e-5), (after - before).abs().max()
    # 2 bits x in == 1 bit x 2 in, and one fp32 scale per subgroup either way
    assert model_size(model).encoder_bits == bits_before
    split = extract_assignment(model)
    assert split.modules[names[0]].in_features == 2 * a.modules[names[0]].in_features
    assert {b for n in names for b in split.modules[n].bits} == {1}
    with pytest.raises(ValueError, match="no ternary"):
        split_ternary_linears(model)
