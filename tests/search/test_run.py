from __future__ import annotations

import csv
import json
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

import amqs.search.run as search_run
import amqs.train.qat as qat
from amqs.finetune import run as finetune
from amqs.models.family import family_of
from amqs.quant import BitAssignment
from amqs.search.app import run as search_app
from amqs.utils.cli import UserError
from tests.conftest import compose_cfg


@pytest.fixture
def search_cfg(tmp_path: Path, glue_dir: Path) -> DictConfig:
    overrides = ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}"]
    finetune(compose_cfg("finetune", overrides))  # the tiny teacher
    return compose_cfg("search", overrides)


@pytest.mark.slow
def test_search_derive_retrain_end_to_end(search_cfg: DictConfig, tmp_path: Path) -> None:
    metrics = search_app(search_cfg, command="test")
    out = tmp_path / "runs" / search_cfg.name
    bits = BitAssignment.from_json(out / "bits.json")
    assert abs(bits.meta["encoder_bytes"] - bits.meta["target_bytes"]) <= 0.05 * bits.meta["target_bytes"]
    # The retrained model's measured size is the derived assignment's size, to the byte.
    assert metrics["encoder_bytes"] == bits.meta["encoder_bytes"] == metrics["derived_encoder_bytes"]
    assert metrics["compression"] == pytest.approx(13.0, rel=0.06)
    log = [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines()]
    assert {"epoch", "tau", "train_loss", "expected_bytes", "argmax_bytes", "arch_entropy"} <= set(log[-1])
    assert log[0]["tau"] > log[-1]["tau"]  # annealed
    assert {"entropy_fraction", "expected_over_budget", "hard"} <= set(log[-1])
    for key in ("entropy_fraction", "expected_over_budget", "repair_fraction"):  # the search's decision
        assert metrics[key] == bits.meta[key] and metrics[key] is not None
    assert metrics["undecided"] == (metrics["entropy_fraction"] > 0.3 or metrics["repair_fraction"] > 0.01)
    assert metrics["moved_fraction"] == bits.meta["moved_fraction"] and 0 <= metrics["moved_fraction"] <= 1
    assert (out / "retrain" / "metrics.json").exists() and not (out / "checkpoint").exists()
    rows = list(csv.DictReader((tmp_path / "search.csv").open()))
    assert rows[0]["space"] == "default" and rows[0]["distill"] == "logits" and float(rows[0]["budget_compression"]) == pytest.approx(13.0)
    assert search_app(search_cfg) == metrics  # a finished run is reused


def test_commitment_settings_anneal_over_the_search(search_cfg: DictConfig, tmp_path: Path) -> None:
    cfg = search_cfg.copy()
    cfg.search.update(t_final=0.05, hard_from=0.5, entropy_weight=1.0, size_on="expected")
    cfg.search.arch.every = 1
    out = tmp_path / "runs" / cfg.name
    out.mkdir(parents=True)
    search_run.search(cfg, out)
    log = [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines()]
    steps = log[-1]["step"]
    assert log[-1]["tau"] == pytest.approx(0.05 ** ((steps - 1) / steps))  # geometric 1 -> 0.05 over the search
    hard = [row["hard"] for row in log]
    assert hard[0] == 0.0 and hard[-1] == 1.0 and hard == sorted(hard)  # hard samples from half-way on
    bad = cfg.copy()
    bad.search.hard_from = 1.5
    with pytest.raises(UserError, match="hard_from"):
        search_run.search(bad, tmp_path / "runs" / "bad")


class _Killed(Exception):
    pass


def _final_supernet(monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """Filled with the supernet's state as the search hands it to derivation."""
    state: dict[str, torch.Tensor] = {}
    real = search_run.derived_assignment

    def capture(model, *args, **kwargs):
        state.clear()
        state.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(search_run, "derived_assignment", capture)
    return state


@pytest.mark.slow
def test_killed_search_resumes_to_the_same_supernet(search_cfg: DictConfig, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    search_cfg.train.checkpoint_every = 3  # 8 steps: checkpoints at 3 and 6; the kill lands at 5
    search_cfg.train.log_every = 1
    search_cfg.search.arch.warmup_epochs = 0.0
    final = _final_supernet(monkeypatch)
    reference = search_run.search(search_cfg, _fresh(tmp_path / "a"))
    reference_state = dict(final)

    real_step, calls = search_run.search_step, {"n": 0}

    def dies_at_step_6(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise _Killed
        return real_step(*args, **kwargs)

    out = _fresh(tmp_path / "b")
    monkeypatch.setattr(search_run, "search_step", dies_at_step_6)
    with pytest.raises(_Killed):
        search_run.search(search_cfg, out)
    assert _log_steps(out / "search_log.jsonl") == [1, 2, 3, 4, 5]  # 4 and 5 are past the checkpoint
    monkeypatch.setattr(search_run, "search_step", real_step)
    resumed = search_run.search(search_cfg, out)
    assert resumed.modules == reference.modules
    assert final.keys() == reference_state.keys()
    for k, v in final.items():  # bit for bit: weights, logits, LSQ steps, activation ranges
        assert torch.equal(v, reference_state[k]), k
    assert (out / "search_log.jsonl").read_text() == (tmp_path / "a" / "search_log.jsonl").read_text()
    assert _log_steps(out / "search_log.jsonl") == list(range(1, 9))


def _log_steps(path: Path) -> list[int]:
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def _fresh(path: Path) -> Path:
    (path / "checkpoint").mkdir(parents=True)
    return path


def _dies_at(n: int, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` that SIGKILLs its own process at the ``n``-th call: no cleanup code runs."""
    calls = {"n": 0}

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)

    return wrapped


def _app_killed_at(phase: str, n: int, overrides: list[str]) -> None:
    """The search app, dying at its ``n``-th search step or retrain loss (in a forked child process)."""
    if phase == "search":
        search_run.search_step = _dies_at(n, search_run.search_step)
    else:
        real_fit = qat.fit
        qat.fit = lambda *args, loss_fn, **kwargs: real_fit(*args, loss_fn=_dies_at(n, loss_fn), **kwargs)
    search_app(compose_cfg("search", overrides))


@pytest.mark.slow
def test_sigkilled_run_resumes_bit_for_bit(search_cfg: DictConfig, tmp_path: Path, glue_dir: Path) -> None:
    # checkpoint_every=4 (smoke): the search dies at step 6 of 8, the retrain at step 7 of 8; each resumes from 4.
    base = ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}", "train.num_threads=1"]
    fork = multiprocessing.get_context("fork")  # a real process (imports inherited: seconds, not tens)
    for phase, n in (("search", 6), ("retrain", 7)):  # the second run resumes the search, then dies retraining
        child = fork.Process(target=_app_killed_at, args=(phase, n, [*base, "name=killed"]))
        child.start()
        child.join(timeout=300)
        assert child.exitcode == -signal.SIGKILL, f"{phase}: exit code {child.exitcode}"
    killed_dir, ref_dir = tmp_path / "runs" / "killed", tmp_path / "runs" / "reference"
    assert (killed_dir / "bits.json").exists() and (killed_dir / "retrain" / "checkpoint").exists()
    resumed = search_app(compose_cfg("search", [*base, "name=killed"]))
    reference = search_app(compose_cfg("search", [*base, "name=reference"]))
    for key in ("dev_accuracy", "dev_f1", "dev_accuracy_ptq", "search_val_accuracy", "encoder_bytes", "compression"):
        assert resumed[key] == reference[key], key
    bits = [BitAssignment.from_json(d / "bits.json").modules for d in (killed_dir, ref_dir)]
    assert bits[0] == bits[1]
    student, ref_student = (torch.load(d / "retrain" / "student.pt") for d in (killed_dir, ref_dir))
    assert student.keys() == ref_student.keys()
    for k, v in student.items():
        assert torch.equal(v, ref_student[k]), k
    for log in ("search_log.jsonl", "retrain/train_log.jsonl"):  # each step once, with the same numbers
        assert (killed_dir / log).read_text() == (ref_dir / log).read_text(), log
        assert _log_steps(killed_dir / log) == [2, 4, 6, 8]


def test_cuda_without_cuda_is_refused_before_anything_runs(search_cfg: DictConfig, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    search_cfg.device = "cuda"
    with pytest.raises(ValueError) as e:
        search_app(search_cfg)
    assert str(e.value) == ("device=cuda: no CUDA device is visible here (torch.cuda.is_available() is False); "
                            "use device=cpu")
    assert not (tmp_path / "runs").exists()


def test_infeasible_budget_fails_before_training(search_cfg: DictConfig) -> None:
    search_cfg.budget.value = 1000.0
    with pytest.raises(ValueError, match="feasible range"):
        search_app(search_cfg)


def test_a_latency_budget_pulls_the_expected_latency_down(search_cfg: DictConfig, tmp_path: Path) -> None:
    from amqs.search.latency import LatencyTable

    # the smoke model's geometry (2 layers, 4 heads, FFN 128): heads and neurons cost what they cost in ORT
    table = LatencyTable(1, 128, 1, 2, 4, 128, 10.0, (0, 4), (7.0, 10.0), (0, 128), (8.0, 10.0))
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table.to_dict()))
    cfg = search_cfg.copy()
    cfg.search.arch.every = 1
    with pytest.raises(UserError, match="needs both budget.latency_ms"):
        search_run.search(OmegaConf.merge(cfg, {"budget": {"latency_ms": 8.0}}), tmp_path / "runs" / "x")
    with pytest.raises(ValueError, match=r"latency_ms=1.0 is outside the feasible range \[5.000, 10.000\] ms"):
        search_run.search(OmegaConf.merge(cfg, {"budget": {"latency_ms": 1.0}, "search": {"latency_table": str(path)}}),
                          tmp_path / "runs" / "x")
    cfg = OmegaConf.merge(cfg, {"budget": {"latency_ms": 7.0}, "search": {"latency_table": str(path)}})
    out = tmp_path / "runs" / "latency"
    out.mkdir(parents=True)
    search_run.search(cfg, out)
    log = [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines()]
    assert log[-1]["target_latency_ms"] == 7.0
    assert log[-1]["expected_latency_ms"] < log[0]["expected_latency_ms"]  # the latency term pulls it down


def test_the_lkd_start_fits_the_supernet_weights_and_keeps_its_logits(search_cfg: DictConfig) -> None:
    from amqs.data import load_glue
    from amqs.search.supernet import arch_parameters

    teacher, tokenizer = qat.load_teacher(search_cfg, 2)
    splits = load_glue(search_cfg.data)
    for init, moved in (("rtn", False), ("lkd", True)):
        cfg = compose_cfg("search", [*_overrides(search_cfg), f"train.init={init}", "train.reconstruct.batches=2"])
        model, _ = search_run.search_supernet(cfg, teacher, torch.device("cpu"))
        logits = [p.detach().clone() for p in arch_parameters(model)]
        before = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(".weight")}
        search_run._start_weights(cfg, model, teacher, splits, tokenizer, torch.device("cpu"))
        assert all(torch.equal(p, q) for p, q in zip(arch_parameters(model), logits))
        changed = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
        assert bool(changed) == moved and all(k.startswith("bert.encoder.") or "pooler" in k or "classifier" in k
                                              for k in changed)


def _overrides(cfg: DictConfig) -> list[str]:
    return ["debug=smoke", f"paths.results_dir={cfg.paths.results_dir}", f"data.glue_dir={cfg.data.glue_dir}"]


@pytest.mark.parametrize("model", ["roberta_tiny", "distilbert_tiny"])
def test_the_search_runs_on_roberta_and_distilbert(model: str, tmp_path: Path, glue_dir: Path) -> None:
    """The BERT-spelled structured space on the other families: their own Q/K/V tied per head, FFN-in blocks
    prunable, the encoder budget met under their own prefix."""
    overrides = ["debug=smoke", f"model={model}", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}"]
    finetune(compose_cfg("finetune", overrides))
    cfg = compose_cfg("search", overrides + ["search.space=structured"])
    out = tmp_path / "runs" / cfg.name
    out.mkdir(parents=True)
    bits = search_run.search(cfg, out)
    family = family_of(qat.load_teacher(cfg, 2)[0])
    linears = [n for n, m in bits.modules.items() if m.kind == "linear"]
    assert linears == [family.layer_module(i, r) for i in range(2) for r in (
        "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
        "intermediate.dense", "output.dense")]
    for i in range(2):  # one decision per head for Q, K and V
        q, k, v = (bits.modules[family.layer_module(i, f"attention.self.{r}")].bits for r in ("query", "key", "value"))
        assert q == k == v and len(q) == 4
    assert abs(bits.meta["encoder_bytes"] - bits.meta["target_bytes"]) <= 0.05 * bits.meta["target_bytes"]
    assert [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines()][-1]["step"] > 0
