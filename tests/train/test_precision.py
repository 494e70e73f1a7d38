"""train.precision: bf16 autocast for the forward matmuls, fp32 for everything that must stay exact."""

from __future__ import annotations

import pytest
import torch

import amqs.utils.provenance as provenance
from amqs.config import TrainConfig
from amqs.quant import apply_assignment, uniform_assignment
from amqs.quant.modules import ActQuant
from amqs.search.space import load_space
from amqs.search.supernet import SupernetLinear, build_supernet
from amqs.data import make_loader
from amqs.train import evaluate, fit
from amqs.train.precision import autocast, pin_precision, resolve_precision, with_precision
from amqs.utils.run import config_hash
from tests.conftest import compose_cfg
from tests.tiny import batch, tiny_bert
from tests.train.test_loop import _data, _setup


def test_auto_is_bf16_only_with_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provenance, "cpu_flags", lambda: ["avx2", "avx512_bf16"])
    assert resolve_precision("auto") == "bf16"
    monkeypatch.setattr(provenance, "cpu_flags", lambda: ["avx2", "avx512_vnni"])
    assert resolve_precision("auto") == "fp32" and resolve_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="train.precision='fp16': use one of"):
        resolve_precision("fp16")
    cfg = compose_cfg("qat", [])
    assert cfg.train.precision == "auto" and pin_precision(cfg).train.precision == "fp32"
    assert cfg.train.precision == "auto"  # pinned on a copy


def test_fp32_runs_keep_their_hashes_and_bf16_is_another_config() -> None:
    """The committed w4a8 row ran in fp32 with the default AdamW: composed so, it hashes as recorded."""
    recorded = ["quant=w4a8", "teacher=shared_sst2", "data.max_train_examples=16000", "train.epochs=1",
                "train.num_threads=1"]
    legacy = compose_cfg("qat", recorded + ["train.precision=fp32", "train.fused_optimizer=false"])
    assert config_hash(legacy) == "2cc23dafef733d72"  # results/runs/sst2-w4a8/metrics.json
    assert config_hash(compose_cfg("qat", recorded + ["train.precision=bf16", "train.fused_optimizer=false"])) \
        != config_hash(legacy)
    assert config_hash(compose_cfg("qat", recorded + ["train.precision=fp32"])) != config_hash(legacy)  # fused


def test_bf16_forward_keeps_fake_quantization_in_fp32() -> None:
    model = tiny_bert(0)
    apply_assignment(model, uniform_assignment(model, bits=4, num_subgroups=8))
    b = batch(1)
    seen = []
    hook = lambda m, inputs, out: seen.append((inputs[0].dtype, out.dtype, m.running_max.dtype))  # noqa: E731
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, ActQuant) and m.enabled]
    with autocast("bf16"):
        logits = model(**b).logits
    for h in handles:
        h.remove()
    assert logits.dtype == torch.bfloat16  # the classifier's matmul ran in bf16
    assert {dtype for _, dtype, _ in seen} == {torch.float32} and {r for *_, r in seen} == {torch.float32}
    assert torch.bfloat16 in {dtype for dtype, _, _ in seen}  # bf16 activations came in, fp32 codes went out


def test_the_supernet_mixes_its_candidates_in_fp32() -> None:
    model = tiny_bert(0)
    build_supernet(model, load_space("default"))
    sn = next(m for m in model.modules() if isinstance(m, SupernetLinear))
    with torch.no_grad():
        reference = sn.mixed_weight()
        with autocast("bf16"):
            mixed = sn.mixed_weight()
    assert mixed.dtype == torch.float32 and torch.equal(mixed, reference)


def test_a_bf16_loss_is_fp32_and_close_to_the_fp32_one() -> None:
    model = tiny_bert(0).eval()
    b = batch(2)
    loss32 = with_precision(lambda m, x: m(**x).loss, "fp32")(model, b)
    loss16 = with_precision(lambda m, x: m(**x).loss, "bf16")(model, b)
    assert loss16.dtype == torch.float32 and loss16.item() == pytest.approx(loss32.item(), rel=2e-2)


def test_fit_in_bf16_learns_and_keeps_fp32_master_weights() -> None:
    """test_loop's toy task, trained in bf16 with the fused AdamW: it learns, and the weights stay fp32."""
    model, tok, loader = _setup()
    cfg = TrainConfig(epochs=6, lr=2e-3, warmup_ratio=0.0, progress=False, checkpoint_every=0, precision="bf16",
                      fused_optimizer=True)
    fit(model, loader, cfg)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert evaluate(model, make_loader(_data(), tok, max_length=16, batch_size=32, shuffle=False),
                    ["accuracy"])["accuracy"] >= 0.95
