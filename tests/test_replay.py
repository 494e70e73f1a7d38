"""amqs-replay: --check of every committed run folder, and tiny runs replayed to identical metrics."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from amqs.finetune import run as finetune_app
from amqs.qat import run as qat_app
from amqs.replay import ReplayError, check_run, describe, main, replay_folder, replay_run
from amqs.search.app import run as search_app
from tests.conftest import REPO, compose_cfg

TABLES = ("teachers.csv", "baselines.csv", "search.csv")
SAME = ("dev_accuracy", "dev_f1", "search_val_accuracy", "encoder_bytes", "total_bytes", "train_examples",
        "data_fingerprint")  # not seconds: they vary with machine load


def _committed_run_folders() -> list[str]:
    files = subprocess.run(["git", "ls-files", "results/**config.yaml"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    return sorted({str(Path(f).parent) for f in files})


def _tracked() -> set[str]:
    return set(subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.split())


def _plans(plan):
    yield plan
    for child in plan.children:
        yield from _plans(child)


@pytest.mark.parametrize("folder", _committed_run_folders())
def test_check_passes_on_every_committed_run_folder(folder: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """--check loads the config and stats the inputs in seconds, whatever this machine lacks of the weights.

    Weights git does not keep (a teacher's model/, a run's student.pt) may be absent here: --check passes and
    lists each with the recorded command that makes it. Honesty: every listed one is really absent and really
    not in git, and every teacher / init_from the run reads that is absent here is listed.
    """
    monkeypatch.chdir(REPO)  # recorded paths are relative to the repository root
    t0 = time.perf_counter()
    plan = check_run(folder)
    lines = describe(plan)
    assert time.perf_counter() - t0 < 10, f"--check of {folder} took more than 10 s"
    assert plan.command and any(plan.command in line for line in lines)
    tracked = _tracked()
    for p in _plans(plan):
        for i in p.inputs:
            if i.weights and not i.ok:
                assert not Path(i.path).exists() and i.path not in tracked, i.line()
                assert "made by: amqs-finetune" in i.note or "made by: amqs-qat" in i.note, i.line()
            cfg = p.saved.cfg
            if i.what == "teacher.source" and i.path == cfg.teacher.source:
                assert i.ok == Path(cfg.teacher.source).is_dir(), i.line()
            assert i.ok or i.weights, i.line()  # check_run raises on any other missing input


def test_check_cli_prints_the_command_and_the_filled_keys(capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    main(["results/runs/sst2-default-compression13.0", "--check"])
    out = capsys.readouterr().out
    assert "recorded: amqs-search budget=c13 teacher=shared_sst2" in out
    run = "results/runs/sst2-default-compression13.0"
    assert f"amqs-replay {run}   -> {run}-replay" in out
    filled = next(line for line in out.splitlines() if "filled from today's defaults:" in line)
    assert {"quant.tws", "init_from"} <= set(filled.split(": ", 1)[1].split(", "))
    assert out.rstrip().endswith("ok: replayable")


def test_a_missing_input_fails_in_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(REPO)
    run = tmp_path / "runs" / "sst2-mine"
    run.mkdir(parents=True)
    text = (REPO / "results/runs/sst2-kdlsq/config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("assignment: null", "") + "assignment: /nowhere/bits.json\n")
    with pytest.raises(SystemExit) as e:
        main([str(run), "--check"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "assignment: /nowhere/bits.json MISSING" in err
    with pytest.raises(ReplayError, match="a study is not rerun as a whole"):
        replay_run(REPO / "results/studies/quick-sst2-minilm-l6-heldout")


def test_replay_folders_never_reuse_a_finished_replay(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    assert replay_folder(tmp_path / "run") == tmp_path / "run-replay"
    (tmp_path / "run-replay").mkdir()  # an unfinished (killed) replay: the next one resumes it
    assert replay_folder(tmp_path / "run") == tmp_path / "run-replay"
    (tmp_path / "run-replay" / "metrics.json").write_text("{}")
    assert replay_folder(tmp_path / "run") == tmp_path / "run-replay2"


@pytest.mark.slow
def test_a_killed_replay_resumes_in_its_folder(tmp_path: Path, glue_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import amqs.train.loop as loop

    over = ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}", "train.checkpoint_every=2"]
    finetune_app(compose_cfg("finetune", over))
    run = tmp_path / "runs" / "sst2-bert-tiny-w4a8"
    qat_app(compose_cfg("qat", over + ["quant=w4a8"]))
    real, calls = loop._train_step, {"n": 0}

    def dies_at_step_7(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt  # a kill between checkpoints
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_step", dies_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        replay_run(run)
    monkeypatch.setattr(loop, "_train_step", real)
    old, new, out = replay_run(run)
    assert out == run.with_name(run.name + "-replay") and not run.with_name(run.name + "-replay2").exists()
    assert {k: old[k] for k in SAME} == {k: new[k] for k in SAME}
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # each logged step once


@pytest.mark.parametrize("folder", ["results/teachers/minilm-l6-sst2", "results/runs/sst2-progressive/2-w4",
                                    "results/runs/sst2-default-compression13.0/retrain",
                                    "results/studies/quick-sst2-minilm-l6-heldout/runs/trial_0003",
                                    "results/studies/quick-sst2-minilm-l6-heldout/runs/trial_0003/retrain"])
def test_a_rerun_is_placed_beside_its_run(folder: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from amqs.finetune import teacher_dir
    from amqs.replay import _placed
    from amqs.train.qat import run_dir

    monkeypatch.chdir(REPO)
    plan = check_run(folder)
    cfg = _placed(plan.saved.cfg, plan, replay_folder(plan.folder))
    where = teacher_dir(cfg) if plan.role == "teacher" else run_dir(cfg)
    assert where == Path(f"{folder}-replay") and not cfg.overwrite
    same = ["train.seed", "data.max_train_examples", "model.source"]
    same += ["teacher.source"] if plan.role != "teacher" else []
    assert all(OmegaConf.select(cfg, k) == OmegaConf.select(plan.saved.cfg, k) for k in same)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_tiny_runs_replay_to_identical_metrics(tmp_path: Path, glue_dir: Path) -> None:
    """A teacher, a QAT run, a staged recipe, a search and its retrain, each rerun from its saved config."""
    over = ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}"]
    finetune_app(compose_cfg("finetune", over))
    small = ["data.max_train_examples=64", "data.max_dev_examples=32", "data.max_search_val_examples=32"]
    qat_app(compose_cfg("qat", over + ["quant=w4a8"]))
    qat_app(compose_cfg("qat", over + small + ["recipe=progressive"]))
    search_app(compose_cfg("search", over + small))
    before = _snapshot(tmp_path)
    runs = {"teachers/bert-tiny-sst2": "teacher", "runs/sst2-bert-tiny-w4a8": "qat",
            "runs/sst2-bert-tiny-progressive": "staged", "runs/sst2-bert-tiny-default-compression13.0": "search",
            "runs/sst2-bert-tiny-default-compression13.0/retrain": "retrain"}
    for folder, role in runs.items():
        plan = check_run(tmp_path / folder)
        assert plan.role == role
        old, new, out = replay_run(tmp_path / folder)
        assert out == tmp_path / f"{folder}-replay" and (out / "metrics.json").is_file()
        assert old["dev_accuracy"] is not None and old["encoder_bytes" if role != "teacher" else "dev_examples"]
        assert {k: old.get(k) for k in SAME} == {k: new.get(k) for k in SAME}, folder
        assert new["command"] == f"amqs-replay {tmp_path / folder}" and new["provenance"]["threads"] >= 1
        assert new["data_fingerprint"]["dev"]["rows"] == plan.saved.cfg.data.max_dev_examples  # the same slice
    # the staged recipe reran every stage, each from the previous replayed stage
    replayed = tmp_path / "runs" / "sst2-bert-tiny-progressive-replay"
    assert sorted(p.name for p in replayed.iterdir() if p.is_dir()) == ["1-w8", "2-w4", "3-w2"]
    assert len(json.loads((replayed / "metrics.json").read_text())["stages"]) == 4
    after = _snapshot(tmp_path)
    # the originals and the tables are untouched: every file that was there is there, byte for byte
    assert {k: v for k, v in after.items() if k in before} == before
    new_files = set(after) - set(before)
    assert not any(Path(f).name in TABLES for f in new_files)
    assert all("-replay" in f for f in new_files), sorted(f for f in new_files if "-replay" not in f)
