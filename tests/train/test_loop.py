from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch

from amqs.config import ModelConfig, TrainConfig
from amqs.data import make_loader
from amqs.models import load_classifier
from amqs.train import NonFiniteLossError, evaluate, fit, seed_everything
from amqs.train.metrics import f1_binary
from amqs.utils.cli import UserError

TINY = ModelConfig(source="random", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def _data(n: int = 64) -> datasets.Dataset:
    # A learnable toy task: the label is which of two words the sentence holds.
    words = ["good", "bad"]
    return datasets.Dataset.from_dict({
        "text_a": [f"this is {words[i % 2]} stuff number {i}" for i in range(n)],
        "text_b": [None] * n,
        "label": [i % 2 for i in range(n)],
    })


def _setup(seed: int = 0, init_seed: int | None = None):
    seed_everything(seed if init_seed is None else init_seed)
    model, tok = load_classifier(TINY, num_labels=2)
    loader = make_loader(_data(), tok, max_length=16, batch_size=8, shuffle=True, seed=seed)
    return model, tok, loader


def test_fit_learns_a_toy_task() -> None:
    model, tok, loader = _setup()
    cfg = TrainConfig(epochs=6, lr=2e-3, warmup_ratio=0.0, progress=False, checkpoint_every=0)
    eval_loader = make_loader(_data(), tok, max_length=16, batch_size=32, shuffle=False)
    before = evaluate(model, eval_loader, ["accuracy"])["accuracy"]
    result = fit(model, loader, cfg)
    after = evaluate(model, eval_loader, ["accuracy"])["accuracy"]
    assert result.steps == 48 and result.train_examples == 6 * 64
    assert after >= 0.95 and after > before


class _Killed(Exception):
    pass


def test_killed_run_resumes_to_identical_weights(tmp_path: Path) -> None:
    """Killed between checkpoints and restarted: the same weights bit for bit (dropout on, so the RNG matters),
    and the log holds every logged step once."""
    cfg = TrainConfig(epochs=1.5, lr=1e-3, progress=False, checkpoint_every=3, log_every=1)  # 12 steps, 8 per epoch
    model, _, loader = _setup()
    fit(model, loader, cfg, log_file=tmp_path / "reference.jsonl")
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    model, _, loader = _setup()
    calls = {"n": 0}

    def dies_at_step_11(m, batch):
        calls["n"] += 1
        if calls["n"] == 11:
            raise _Killed
        return m(**batch).loss

    log_file = tmp_path / "log.jsonl"
    with pytest.raises(_Killed):
        fit(model, loader, cfg, loss_fn=dies_at_step_11, ckpt_dir=tmp_path / "ckpt", log_file=log_file)
    assert len(log_file.read_text().splitlines()) == 10  # step 10 was logged; the checkpoint is at step 9
    model, _, loader = _setup(init_seed=123)  # a fresh process: same config, other init and RNG
    result = fit(model, loader, cfg, ckpt_dir=tmp_path / "ckpt", log_file=log_file)
    assert result.resumed_from_step == 9
    for k, v in model.state_dict().items():
        assert torch.equal(v, reference[k]), k
    steps = [json.loads(line)["step"] for line in log_file.read_text().splitlines()]
    assert steps == list(range(1, 13))
    assert log_file.read_text().splitlines()[-1] == (tmp_path / "reference.jsonl").read_text().splitlines()[-1]


def test_nan_loss_fails_clearly_and_keeps_checkpoint(tmp_path: Path) -> None:
    model, _, loader = _setup()
    cfg = TrainConfig(epochs=1, progress=False, checkpoint_every=2)
    calls = {"n": 0}

    def goes_nan(m, batch):
        calls["n"] += 1
        loss = m(**batch).loss
        return loss * float("nan") if calls["n"] == 5 else loss

    with pytest.raises(NonFiniteLossError, match="loss is nan at step 5/8"):
        fit(model, loader, cfg, loss_fn=goes_nan, ckpt_dir=tmp_path)
    assert torch.load(tmp_path / "state.pt", weights_only=False)["step"] == 4


def test_changed_config_refuses_old_checkpoint(tmp_path: Path) -> None:
    model, _, loader = _setup()
    calls = {"n": 0}

    def dies_at_step_4(m, batch):
        calls["n"] += 1
        if calls["n"] == 4:
            raise _Killed
        return m(**batch).loss

    with pytest.raises(_Killed):
        fit(model, loader, TrainConfig(epochs=1, progress=False, checkpoint_every=2), loss_fn=dies_at_step_4,
            ckpt_dir=tmp_path)
    with pytest.raises(UserError, match="config changed"):
        fit(model, loader, TrainConfig(epochs=2, progress=False), ckpt_dir=tmp_path)


def test_f1_matches_hand_computation() -> None:
    preds = torch.tensor([1, 1, 0, 0, 1])
    labels = torch.tensor([1, 0, 0, 1, 1])
    # tp=2, fp=1, fn=1 -> 2*2 / (4+1+1)
    assert f1_binary(preds, labels) == pytest.approx(4 / 6)
