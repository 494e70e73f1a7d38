"""The lkd start: block inputs and outputs as the model computes them, and fitting that brings a 2-bit student
closer to its fp32 teacher (numerics against the fp32 model itself)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from amqs.finetune import run as finetune
from amqs.quant import apply_assignment, uniform_assignment
from amqs.search.space import load_space
from amqs.search.supernet import arch_parameters, build_supernet
from amqs.train.qat import run_qat
from amqs.train.reconstruct import (ReconstructConfig, _blocks_replaced, block_inputs, reconstruct, run_block,
                                    transformer_blocks)
from amqs.utils.run import config_hash
from tests.conftest import compose_cfg
from tests.tiny import batch, tiny_bert


def _padded(seed: int) -> dict[str, torch.Tensor]:
    b = batch(seed, n=8, length=12)
    b["attention_mask"][:4, 8:] = 0  # half the rows padded: the blocks must get the model's own mask
    return b


def test_blocks_are_the_encoder_layers_and_replay_the_model() -> None:
    model = tiny_bert(0).eval()
    parent, attr, blocks = transformer_blocks(model)
    assert parent is model.bert.encoder and attr == "layer" and blocks is model.bert.encoder.layer
    b = _padded(1)
    inputs = {k: v for k, v in b.items() if k != "labels"}
    with torch.no_grad():
        ref = model(**inputs, output_hidden_states=True)
        h, rest, kwargs = block_inputs(model, b)
        assert torch.equal(h, ref.hidden_states[0])
        for k, block in enumerate(blocks):
            h = run_block(block, h, rest, kwargs)
            assert torch.allclose(h, ref.hidden_states[k + 1], atol=1e-6)
        with _blocks_replaced(model, h, as_tuple=True):
            logits = model(**inputs).logits
    assert torch.allclose(logits, ref.logits, atol=1e-6)
    assert transformer_blocks(model)[2] is blocks  # put back


def _gap(student: torch.nn.Module, teacher: torch.nn.Module, batches: list[dict]) -> float:
    """Mean squared difference of the last hidden states, student vs teacher (eval mode)."""
    student.eval()
    gaps = []
    with torch.no_grad():
        for b in batches:
            x = {k: v for k, v in b.items() if k != "labels"}
            s, t = (m(**x, output_hidden_states=True).hidden_states[-1] for m in (student, teacher))
            gaps.append(((s - t) ** 2).mean().item())
    return sum(gaps) / len(gaps)


def test_reconstruction_brings_a_2bit_student_to_its_teacher() -> None:
    teacher = tiny_bert(0).eval()
    student = copy.deepcopy(teacher)
    apply_assignment(student, uniform_assignment(student, bits=2, num_subgroups=8))
    calib, held = [_padded(i) for i in range(8)], [_padded(100 + i) for i in range(4)]
    before = _gap(student, teacher, held)
    stats = reconstruct(student, teacher, calib, ReconstructConfig(batches=8, epochs=4, lr=1e-3))
    assert len(stats["blocks"]) == 2 and stats["examples"] == 64
    assert all(s["mse_after"] < s["mse_rtn"] for s in stats["blocks"])
    assert stats["head"]["kl_last_epoch"] < stats["head"]["kl_first_epoch"]
    assert _gap(student, teacher, held) < 0.5 * before  # on batches it never saw
    assert all(p.dtype == torch.float32 for p in student.parameters())
    assert all(torch.equal(p, q) for p, q in zip(teacher.parameters(), tiny_bert(0).parameters()))  # untouched


def test_a_supernet_keeps_its_logits_and_bf16_stays_close() -> None:
    teacher = tiny_bert(0).eval()
    student = copy.deepcopy(teacher)
    build_supernet(student, load_space("default"), init_bias=2.0)
    logits = [p.detach().clone() for p in arch_parameters(student)]
    w0 = student.bert.encoder.layer[0].intermediate.dense.weight.detach().clone()
    stats = reconstruct(student, teacher, [_padded(i) for i in range(4)], ReconstructConfig(batches=4, epochs=2),
                        precision="bf16", exclude=arch_parameters(student))
    assert all(torch.equal(p, q) for p, q in zip(arch_parameters(student), logits))
    assert not torch.equal(student.bert.encoder.layer[0].intermediate.dense.weight, w0)  # candidates refitted
    assert all(s["mse_after"] < s["mse_rtn"] for s in stats["blocks"])


def test_no_batches_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least one calibration batch"):
        reconstruct(tiny_bert(0), tiny_bert(0), [], ReconstructConfig())


def test_rtn_runs_keep_their_hash_and_lkd_settings_count_only_with_lkd() -> None:
    base = compose_cfg("qat", ["quant=w4a8"])
    assert config_hash(base) == config_hash(compose_cfg("qat", ["quant=w4a8", "train.reconstruct.lr=0.5"]))
    lkd = compose_cfg("qat", ["quant=w4a8", "train.init=lkd"])
    assert config_hash(lkd) != config_hash(base)
    assert config_hash(lkd) != config_hash(compose_cfg("qat", ["quant=w4a8", "train.init=lkd",
                                                               "train.reconstruct.lr=0.5"]))


@pytest.fixture
def smoke(tmp_path: Path, glue_dir: Path) -> list[str]:
    overrides = ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}"]
    finetune(compose_cfg("finetune", overrides))
    return overrides


def test_qat_from_the_lkd_start_records_it(smoke: list[str], tmp_path: Path) -> None:
    cfg: DictConfig = compose_cfg("qat", smoke + ["quant=w2a8", "train.init=lkd", "train.reconstruct.batches=2"])
    metrics = run_qat(cfg)
    out = tmp_path / "runs" / "sst2-bert-tiny-w2a8"
    fitted = json.loads((out / "reconstruct.json").read_text())
    assert metrics["init"] == "lkd" and metrics["init_seconds"] == fitted["seconds"]
    assert len(fitted["blocks"]) == 2 and metrics["search_val_accuracy_ptq"] is not None
    with pytest.raises(ValueError, match="train.init='gptq': use one of rtn, lkd"):
        run_qat(compose_cfg("qat", smoke + ["quant=w2a8", "train.init=gptq", "name=other"]))
    with pytest.raises(ValueError, match="train.init=lkd starts a quantized student"):
        finetune(compose_cfg("finetune", smoke + ["train.init=lkd"]))
