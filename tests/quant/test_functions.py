"""Tests of the pure quantization math in amqs.quant.functions."""

from __future__ import annotations

import pytest
import torch

from amqs.quant.functions import (
    choose_qparams_minmax,
    choose_qparams_symmetric,
    choose_qparams_ternary_twn,
    dequantize,
    fake_quantize,
    from_subgroups,
    init_lsq_step,
    lsq_fake_quantize,
    qrange,
    quantize_subgroups,
    quantize_to_int,
    sqnr_db,
    to_subgroups,
    validate_bits,
)

G = 8

# Measured on torch.randn(64, 256), 8 subgroups, seeds 0-2 (min over seeds):
#   minmax    8b 41.99  4b 17.45  2b 3.59
#   symmetric 8b 41.35  4b 16.28  2b 0.94   (max-abs ternary zeroes most weights)
#   twn       8b 41.35  4b 16.28  2b 7.16   (TWN only changes the 2-bit case)
#   lsq(init) 8b 27.71  4b 15.18  2b 6.36   (2 mean|w| / sqrt(qmax) is coarse at 8 bits)
#   any       1b 4.38                        (binary sign * mean|w|)
SQNR_MIN = {
    "minmax": {8: 40.0, 4: 16.5, 2: 3.0, 1: 4.0},
    "symmetric": {8: 39.5, 4: 15.5, 2: 0.5, 1: 4.0},
    "twn": {8: 39.5, 4: 15.5, 2: 6.5, 1: 4.0},
    "lsq": {8: 26.5, 4: 14.5, 2: 5.5, 1: 4.0},
}


def _weights(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return to_subgroups(torch.randn(64, 256, generator=g), G)


def _quant(wg: torch.Tensor, bits: torch.Tensor, scheme: str) -> torch.Tensor:
    step = init_lsq_step(wg, bits) if scheme == "lsq" else None
    return quantize_subgroups(wg, bits, scheme, step)


def test_subgroup_reshape_roundtrip_and_divisibility() -> None:
    w = torch.arange(24.0).reshape(6, 4)
    wg = to_subgroups(w, 3)
    assert wg.shape == (3, 8)
    assert torch.equal(wg[1], w[2:4].reshape(-1))  # subgroups are contiguous row blocks
    assert torch.equal(from_subgroups(wg, w.shape), w)
    with pytest.raises(ValueError, match=r"\(6, 4\).*4 equal row subgroups"):
        to_subgroups(w, 4)


def test_qrange_values() -> None:
    bits = torch.tensor([1, 2, 4, 8])
    qmin, qmax = qrange(bits, symmetric=False)
    assert qmin.tolist() == [0, 0, 0, 0] and qmax.tolist() == [1, 3, 15, 255]
    qmin, qmax = qrange(bits, symmetric=True)
    assert qmin.tolist() == [-1, -1, -7, -127] and qmax.tolist() == [1, 1, 7, 127]


def test_validate_bits() -> None:
    validate_bits([0, 1, 2, 4, 8, 32])
    with pytest.raises(ValueError, match=r"\[3, 16\]"):
        validate_bits(torch.tensor([8, 3, 16]))


@pytest.mark.parametrize("scheme", ["minmax", "symmetric", "twn", "lsq"])
@pytest.mark.parametrize("bits", [8, 4, 2, 1])
def test_sqnr(scheme: str, bits: int) -> None:
    wg = _weights()
    q = _quant(wg, torch.full((G,), bits), scheme)
    assert sqnr_db(wg, q) > SQNR_MIN[scheme][bits]


@pytest.mark.parametrize("scheme", ["minmax", "symmetric", "lsq"])
def test_sqnr_decreases_with_bits(scheme: str) -> None:
    wg = _weights(1)
    values = [sqnr_db(wg, _quant(wg, torch.full((G,), b), scheme)) for b in (8, 4, 2)]
    assert values[0] > values[1] > values[2]


@pytest.mark.parametrize("scheme", ["minmax", "symmetric", "twn"])
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_number_of_levels(scheme: str, bits: int) -> None:
    q = quantize_subgroups(_weights(), torch.full((G,), bits), scheme)
    levels = max(len(torch.unique(row)) for row in q)
    expected = {1: 2, 2: 3 if scheme != "minmax" else 4, 4: 15 if scheme != "minmax" else 16}[bits]
    assert levels <= expected


def test_minmax_matches_int_roundtrip() -> None:
    wg = _weights()
    bits = torch.tensor([8, 4, 2, 8, 4, 2, 8, 4])
    scale, zp = choose_qparams_minmax(wg, bits)
    qmin, qmax = qrange(bits, symmetric=False)
    q = quantize_to_int(wg, scale, zp, qmin, qmax)
    assert q.dtype == torch.int32
    assert bool(((q >= qmin[:, None]) & (q <= qmax[:, None])).all())
    assert torch.equal(dequantize(q, scale, zp), quantize_subgroups(wg, bits, "minmax"))
    assert torch.equal(fake_quantize(wg, scale, zp, qmin, qmax), dequantize(q, scale, zp))


def test_minmax_range_contains_zero_and_guards_zero_range() -> None:
    wg = torch.stack([torch.full((4,), 2.0), torch.zeros(4)])  # all-positive, all-zero
    scale, zp = choose_qparams_minmax(wg, torch.tensor([8, 8]))
    assert zp.tolist() == [0.0, 0.0] and bool((scale > 0).all())
    assert torch.allclose(quantize_subgroups(wg, torch.tensor([8, 8])), wg)


def test_symmetric_and_twn_qparams() -> None:
    wg = torch.tensor([[1.0, -4.0, 0.5, 0.0], [1.0, -1.0, 1.0, -1.0]])
    assert choose_qparams_symmetric(wg, torch.tensor([8, 1])).tolist() == pytest.approx([4.0 / 127, 1.0])
    threshold, alpha = choose_qparams_ternary_twn(wg)
    assert torch.allclose(threshold, torch.tensor([0.7 * 5.5 / 4, 0.7]))
    assert torch.allclose(alpha, torch.tensor([2.5, 1.0]))  # mean of |w| > threshold
    q = quantize_subgroups(wg, torch.tensor([2, 2]), "twn")
    assert q.tolist() == [[2.5, -2.5, 0.0, 0.0], [1.0, -1.0, 1.0, -1.0]]


def test_binary_is_sign_times_mean_abs() -> None:
    wg = torch.tensor([[0.5, -1.5, 0.0, 2.0]])
    for scheme in ("minmax", "symmetric", "twn"):
        q = quantize_subgroups(wg, torch.tensor([1]), scheme)
        assert q.tolist() == [[1.0, -1.0, 1.0, 1.0]]
    q = quantize_subgroups(wg, torch.tensor([1]), "lsq", step=torch.tensor([0.75]))
    assert q.tolist() == [[0.75, -0.75, 0.75, 0.75]]


@pytest.mark.parametrize("scheme", ["minmax", "symmetric", "twn", "lsq"])
def test_pruned_and_fp32_subgroups(scheme: str) -> None:
    wg = _weights()
    bits = torch.tensor([0, 32, 8, 0, 4, 32, 2, 1])
    q = _quant(wg, bits, scheme)
    assert bool((q[bits == 0] == 0).all())
    assert torch.equal(q[bits == 32], wg[bits == 32])


@pytest.mark.parametrize("scheme", ["minmax", "symmetric", "twn", "lsq"])
def test_mixed_bits_equal_per_subgroup_reference(scheme: str) -> None:
    wg = _weights(2)
    bits = torch.tensor([8, 4, 2, 1, 0, 32, 4, 8])
    step = init_lsq_step(wg, bits)
    mixed = quantize_subgroups(wg, bits, scheme, step)
    # Reference: one call per subgroup (a Python loop is fine in a test only).
    ref = torch.cat([quantize_subgroups(wg[i : i + 1], bits[i : i + 1], scheme, step[i : i + 1]) for i in range(G)])
    torch.testing.assert_close(mixed, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scheme", ["minmax", "symmetric", "twn"])
def test_ste_gradients(scheme: str) -> None:
    wg = _weights().requires_grad_()
    bits = torch.tensor([8, 4, 2, 1, 0, 32, 8, 8])
    upstream = torch.randn_like(wg)
    (quantize_subgroups(wg, bits, scheme) * upstream).sum().backward()
    assert torch.isfinite(wg.grad).all()
    keep = bits != 0
    assert torch.equal(wg.grad[keep], upstream[keep])  # identity STE
    assert bool((wg.grad[~keep] == 0).all())  # pruned subgroups get no gradient


def test_lsq_gradients_match_paper() -> None:
    x = torch.tensor([[0.3, 0.74, 2.0, -5.0]], requires_grad=True)
    s = torch.tensor([0.5], requires_grad=True)
    out = lsq_fake_quantize(x, s, torch.tensor([-3.0]), torch.tensor([3.0]), grad_scale=0.1)
    assert out.tolist() == [[0.5, 0.5, 1.5, -1.5]]
    out.sum().backward()
    assert x.grad.tolist() == [[1.0, 1.0, 0.0, 0.0]]  # clipped STE
    # d/ds: round(v) - v inside (v = 0.6, 1.48), qmax / qmin outside; times g = 0.1
    expected = 0.1 * ((1 - 0.6) + (1 - 1.48) + 3.0 - 3.0)
    assert s.grad.item() == pytest.approx(expected, abs=1e-6)


def test_lsq_step_learning_improves_sqnr() -> None:
    wg = _weights()
    bits = torch.full((G,), 8)
    step = torch.nn.Parameter(init_lsq_step(wg, bits))
    before = sqnr_db(wg, quantize_subgroups(wg, bits, "lsq", step))
    opt = torch.optim.Adam([step], lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        loss = (quantize_subgroups(wg, bits, "lsq", step) - wg).pow(2).sum()
        loss.backward()
        assert torch.isfinite(step.grad).all() and bool((step.grad != 0).any())
        opt.step()
    after = sqnr_db(wg, quantize_subgroups(wg, bits, "lsq", step))
    assert after > before + 8  # measured: 27.8 dB -> ~40 dB


def test_lsq_gradients_mixed_bits_finite() -> None:
    wg = _weights().requires_grad_()
    bits = torch.tensor([0, 32, 1, 2, 4, 8, 8, 8])
    step = torch.nn.Parameter(init_lsq_step(wg, bits))
    quantize_subgroups(wg, bits, "lsq", step).pow(2).sum().backward()
    assert torch.isfinite(wg.grad).all() and torch.isfinite(step.grad).all()
    assert step.grad[:2].tolist() == [0.0, 0.0]  # pruned / fp32 subgroups do not use the step
    assert bool((step.grad[2:] != 0).all())


def test_init_lsq_step() -> None:
    wg = torch.tensor([[1.0, -1.0, 3.0, -3.0]])  # mean|w| = 2
    assert init_lsq_step(wg, torch.tensor([4])).item() == pytest.approx(2 * 2 / 7**0.5)
    assert init_lsq_step(wg, torch.tensor([1])).item() == pytest.approx(2.0)


def test_bad_inputs() -> None:
    wg = _weights()
    with pytest.raises(ValueError, match="unknown quantization scheme"):
        quantize_subgroups(wg, torch.full((G,), 8), "foo")
    with pytest.raises(ValueError, match=r"shape \[8\]"):
        quantize_subgroups(wg, torch.full((4,), 8))
    with pytest.raises(ValueError, match="step"):
        quantize_subgroups(wg, torch.full((G,), 8), "lsq")


def test_dtype_preserved() -> None:
    wg = _weights().to(torch.bfloat16)
    for scheme in ("minmax", "symmetric", "twn", "lsq"):
        assert _quant(wg, torch.tensor([8, 4, 2, 1, 0, 32, 8, 8]), scheme).dtype == torch.bfloat16


def test_twn_threshold_does_not_depend_on_the_summation_order() -> None:
    """A whole-matrix TWN threshold (TernaryBERT: one subgroup of ~590k weights) is computed in float64:
    in float32 its value depended on the memory order, and a weight within an ulp of it flipped between
    training and export."""
    from amqs.quant.functions import choose_qparams_ternary_twn

    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 589_824, generator=g) * 0.05
    ref_t, ref_a = choose_qparams_ternary_twn(w)
    exact = 0.7 * w.double().abs().mean()
    assert abs(float(ref_t) - float(exact)) <= 1e-7 * float(exact)
    for seed in range(4):
        perm = torch.randperm(w.shape[1], generator=torch.Generator().manual_seed(seed))
        t, a = choose_qparams_ternary_twn(w[:, perm])
        assert torch.equal(t, ref_t) and torch.equal(a, ref_a)
