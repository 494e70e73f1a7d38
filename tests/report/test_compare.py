from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from amqs.report.compare import COLUMNS, add_run, main, paired_bootstrap, render
from amqs.utils.run import TRACKED_RESULTS, write_json
from amqs.utils.runconfig import load_run_config


# --- the paired bootstrap on synthetic predictions ----------------------------------------------------------

def test_identical_methods_differ_by_nothing() -> None:
    correct = np.random.default_rng(1).random((3, 500)) < 0.85
    d = paired_bootstrap(correct, correct.copy())
    assert d.mean == 0.0 and d.low <= 0.0 <= d.high and d.verdict == "tie"


def test_better_on_a_tenth_of_the_examples_gives_about_ten_points() -> None:
    rng = np.random.default_rng(2)
    n = 1000
    ref = np.ones(n, bool)
    ref[rng.choice(n, 100, replace=False)] = False  # the reference: 90% right
    other = ref.copy()
    other[rng.choice(np.flatnonzero(ref), 100, replace=False)] = False  # wrong on 100 more examples: 80%
    d = paired_bootstrap(ref[None], np.stack([other, other]))  # seed counts may differ
    assert d.mean == pytest.approx(0.10)
    assert 0.07 < d.low < 0.10 < d.high < 0.13 and d.verdict == "win"
    assert paired_bootstrap(np.stack([other]), ref[None]).verdict == "loss"
    assert paired_bootstrap(ref[None], np.stack([other]), resamples=2000) == paired_bootstrap(
        ref[None], np.stack([other]), resamples=2000)  # fixed seed: reproducible


def test_a_small_difference_is_a_tie_even_when_the_interval_excludes_zero() -> None:
    ref = np.ones(5000, bool)
    other = ref.copy()
    other[:10] = False  # 0.2 points: significant, below the 0.3-point margin
    d = paired_bootstrap(ref[None], other[None])
    assert d.low > 0 and d.verdict == "tie"


# --- render on a hand-made table -------------------------------------------------------------------------

def _predictions(folder: Path, labels: np.ndarray, correct: np.ndarray) -> str:
    preds = np.where(correct, labels, 1 - labels)
    write_json(folder / "dev_predictions.json", {"split": "dev", "labels": labels.tolist(),
                                                 "predictions": preds.tolist()})
    return f"{folder.name}/dev_predictions.json"


def test_render_writes_blocks_intervals_verdicts_and_the_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    base = rng.random(400) < 0.8
    rows = []
    runs = [("sst2", "search-default", 0, 0.0, True), ("sst2", "search-default", 1, 0.0, False),
            ("sst2", "w2a8", 0, 0.15, False), ("sst2", "w2a8", 1, 0.15, False), ("sst2", "shuffled", 0, 0.0, False),
            ("mrpc", "w2a8", 0, 0.0, False)]
    for i, (task, method, seed, worse, undecided) in enumerate(runs):
        correct = base & (rng.random(400) >= worse)
        folder = tmp_path / f"r{i}"
        folder.mkdir()
        rows.append({"task": task, "budget_compression": 13.0, "method": method, "seed": seed, "run": f"runs/r{i}",
                     "encoder_bytes": 3_200_000 + i, "total_bytes": 15_700_000, "compression": 13.3,
                     "total_compression": 5.8, "dev_accuracy": correct.mean(),
                     "dev_f1": 0.8 if task == "mrpc" else None,
                     "undecided": undecided if method.startswith("search") else None,
                     "predictions": _predictions(folder, labels, correct), "command": f"cmd-{method}-{seed}",
                     "add_command": f"add-{i}"})
    pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp_path / "compare.csv", index=False)
    md = render(tmp_path, resamples=2000).read_text()
    sst2, mrpc = md.index("## SST-2, budget 13x"), md.index("## MRPC, budget 13x")
    assert sst2 < mrpc  # SST-2 first
    block = md[sst2:mrpc]
    assert block.index("| search-default | 2 |") < block.index("| shuffled | 1 |") < block.index("| w2a8 | 2 |")
    w2a8 = next(line for line in block.splitlines() if line.startswith("| w2a8 |"))
    assert "| win |" in w2a8 and "[+" in w2a8  # ~15% worse on the reference's right answers: a clear win
    assert "undecided (seed 0)" in block
    assert "No reference method here" in md[mrpc:] and "dev_f1 (%)" in md[mrpc:] and "dev_f1" not in block
    assert "`cmd-w2a8-1`" in md and "`add-5`" in md
    assert (tmp_path / "compare.png").stat().st_size > 10_000


def test_render_refuses_runs_of_other_dev_examples(tmp_path: Path) -> None:
    rows = []
    for i, n in enumerate((10, 12)):
        folder = tmp_path / f"r{i}"
        folder.mkdir()
        rows.append({"task": "sst2", "budget_compression": 13.0, "method": f"m{i}", "seed": 0, "run": f"r{i}",
                     "dev_accuracy": 1.0, "encoder_bytes": 1, "total_bytes": 1, "compression": 1.0,
                     "total_compression": 1.0, "predictions": _predictions(folder, np.zeros(n, int), np.ones(n, bool)),
                     "command": "c"})
    pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp_path / "compare.csv", index=False)
    with pytest.raises(ValueError, match="r1/dev_predictions.json: its dev labels differ"):
        render(tmp_path)


# --- add: a real tiny QAT run ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, glue_dir: Path) -> Path:
    """A finished amqs-qat debug=smoke run (w4a8 of the tiny random BERT), shared by the tests below."""
    from amqs.finetune import run as finetune
    from amqs.qat import train
    from tests.conftest import compose_cfg

    out = tmp_path_factory.mktemp("qat")
    overrides = ["debug=smoke", f"paths.results_dir={out}", f"data.glue_dir={glue_dir}"]
    finetune(compose_cfg("finetune", overrides))
    train(compose_cfg("qat", overrides + ["quant=w4a8"]), command="amqs-qat debug=smoke quant=w4a8")
    return out / "runs" / "sst2-bert-tiny-w4a8"


def _rows(results: Path) -> list[dict[str, str]]:
    with (results / "compare.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_add_a_qat_run_and_re_adding_replaces_its_row(tiny_run: Path, tmp_path: Path, capsys) -> None:
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    main(["add", str(tiny_run), "--method", "w4a8", "--budget", "13", "--results", str(tmp_path)])
    assert "sst2 budget 13 w4a8 seed 42" in capsys.readouterr().out
    [row] = _rows(tmp_path)
    assert (row["task"], row["budget_compression"], row["method"], row["seed"]) == ("sst2", "13.0", "w4a8", "42")
    assert float(row["dev_accuracy"]) == pytest.approx(metrics["dev_accuracy"])
    assert int(row["encoder_bytes"]) == metrics["encoder_bytes"] and row["steps"] == str(metrics["steps"])
    assert row["config_hash"] == metrics["config_hash"] and row["command"] == "amqs-qat debug=smoke quant=w4a8"
    saved = load_run_config(tiny_run)
    assert (row["init"], row["precision"], row["undecided"]) == (saved.train.init, saved.train.precision, "")
    assert row["add_command"].startswith("python -m amqs.report.compare add ")
    add_run(tiny_run, "w4a8", 13.0, tmp_path)  # the same key: replaced
    assert len(_rows(tmp_path)) == 1
    add_run(tiny_run, "w4a8", 13.0, tmp_path, seed=1)
    add_run(tiny_run, "w4a8", 16.2, tmp_path)
    assert sorted((r["budget_compression"], r["seed"]) for r in _rows(tmp_path)) == [
        ("13.0", "1"), ("13.0", "42"), ("16.2", "42")]
    main(["render", "--results", str(tmp_path)])
    md = (tmp_path / "compare.md").read_text()
    assert "| w4a8 | 2 |" in md and "No reference method here" in md


@pytest.mark.slow
def test_add_a_search_run_reads_its_retrain_and_search_facts(tiny_run: Path, tmp_path: Path) -> None:
    search = tmp_path / "runs" / "sst2-search"
    shutil.copytree(tiny_run, search / "retrain")
    shutil.copy(tiny_run / "config.yaml", search / "config.yaml")
    retrain = json.loads((tiny_run / "metrics.json").read_text())
    write_json(search / "metrics.json", {**{k: retrain[k] for k in ("task", "encoder_bytes", "total_bytes",
                                                                      "compression", "total_compression",
                                                                      "dev_accuracy", "dev_f1", "search_val_accuracy",
                                                                      "train_examples", "config_hash", "command")},
                                         "budget_kind": "compression", "seconds": 9.5, "undecided": True,
                                         "entropy_fraction": 0.25})
    write_json(search / "bits.json", {"meta": {"search_steps": 7}})
    row = add_run(search, "search-default", 13.0, tmp_path)
    assert row["run"] == "runs/sst2-search" and row["predictions"] == "runs/sst2-search/retrain/dev_predictions.json"
    assert row["steps"] == retrain["steps"] + 7 and row["seconds"] == 9.5
    assert (row["undecided"], row["entropy_fraction"], row["repair_fraction"]) == (True, 0.25, None)
    add_run(tiny_run, "w4a8", 13.0, tmp_path)
    md = render(tmp_path, resamples=500).read_text()
    w4a8 = next(line for line in md.splitlines() if line.startswith("| w4a8 |"))
    assert "| +0.00 | [+0.00, +0.00] | tie |" in w4a8  # the same predictions
    assert "undecided (seed 42)" in md


@pytest.mark.slow
def test_smoke_runs_never_write_the_tracked_results(tiny_run: Path) -> None:
    before = (TRACKED_RESULTS / "compare.csv").read_bytes() if (TRACKED_RESULTS / "compare.csv").exists() else None
    with pytest.raises(ValueError, match="debug run"):
        add_run(tiny_run, "w4a8", 13.0, TRACKED_RESULTS)
    after = (TRACKED_RESULTS / "compare.csv").read_bytes() if (TRACKED_RESULTS / "compare.csv").exists() else None
    assert before == after


@pytest.mark.slow
def test_bad_run_folders_fail_naming_the_file(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        add_run(tmp_path / "nope", "m", 13.0, tmp_path)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(tiny_run, unfinished)
    (unfinished / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"unfinished/metrics.json missing: not a finished run"):
        add_run(unfinished, "m", 13.0, tmp_path)
    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    (old / "dev_predictions.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"old/dev_predictions.json missing: the run predates"):
        add_run(old, "m", 13.0, tmp_path)
    record = json.loads((tiny_run / "dev_predictions.json").read_text())
    record["predictions"][0] = 1 - record["predictions"][0]  # another run's: one answer differs
    write_json(old / "dev_predictions.json", record)
    with pytest.raises(ValueError, match="not this run's"):
        add_run(old, "m", 13.0, tmp_path)
    assert not (tmp_path / "compare.csv").exists()
