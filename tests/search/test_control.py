"""Random controls of a search (amqs.search.control): same bytes, permuted bits, the search's retrain."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from amqs.finetune import run as finetune
from amqs.quant import BitAssignment
from amqs.search.app import run as search_app
from amqs.search.control import main as control_main
from amqs.search.control import run_control
from tests.conftest import compose_cfg


@pytest.mark.slow
def test_control_keeps_sizes_and_ties_and_trains_like_the_retrain(tmp_path: Path, glue_dir: Path) -> None:
    ov = ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}"]
    finetune(compose_cfg("finetune", ov))
    searched = search_app(compose_cfg("search", ov + ["search=structured", "name=s"]), command="test")
    run = tmp_path / "runs" / "s"
    results = tmp_path / "tables"
    control_main([str(run), "--seeds", "0", "1", "--results", str(results)])
    orig = BitAssignment.from_json(run / "bits.json")
    for seed in (0, 1):
        out = results / "runs" / "s" / f"control-shuffled{seed}"  # not inside the searched run (an input)
        shuffled = BitAssignment.from_json(out / "bits.json")
        assert shuffled.meta["shuffled_from_seed"] == seed
        for name, mb in orig.modules.items():
            assert sorted(shuffled.modules[name].bits) == sorted(mb.bits)
        layer = "bert.encoder.layer.0.attention.self."
        assert shuffled.modules[layer + "query"].bits == shuffled.modules[layer + "key"].bits \
            == shuffled.modules[layer + "value"].bits  # tied heads stay tied: a pruned head stays removable
    assert any(BitAssignment.from_json(results / "runs" / "s" / f"control-shuffled{s}" / "bits.json") != orig
               for s in (0, 1))
    assert not list(run.glob("control-*"))
    rows = list(csv.DictReader((results / "controls.csv").open()))
    assert [r["seed"] for r in rows] == ["0", "1"]
    assert {int(r["encoder_bytes"]) for r in rows} == {searched["encoder_bytes"]}
    assert float(rows[0]["searched_dev_accuracy"]) == searched["dev_accuracy"] and rows[0]["space"] == "structured"
    assert "Random controls" in (results / "controls.md").read_text()
    again = run_control(run, 0, results=results)  # finished: reused, not retrained
    assert again["dev_accuracy"] == float(rows[0]["dev_accuracy"])


def test_control_of_an_unfinished_search_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "runs" / "s").mkdir(parents=True)
    (tmp_path / "runs" / "s" / "bits.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="config.yaml, metrics.json missing"):
        run_control(tmp_path / "runs" / "s", 0)
