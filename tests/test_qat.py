"""amqs-qat's entry (amqs.qat): ``assignment=`` trains a given bit-assignment file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from amqs.finetune import run as finetune
from amqs.qat import run as qat_app
from amqs.quant import BitAssignment
from amqs.search.app import run as search_app
from tests.conftest import compose_cfg


def _overrides(tmp_path: Path, glue_dir: Path) -> list[str]:
    return ["debug=smoke", f"paths.results_dir={tmp_path}", f"data.glue_dir={glue_dir}"]


@pytest.mark.slow
def test_given_assignment_reproduces_the_search_retrain(tmp_path: Path, glue_dir: Path) -> None:
    """amqs-qat on a search's bits.json, with the search's retrain settings, is that retrain, bit for bit."""
    ov = _overrides(tmp_path, glue_dir)
    finetune(compose_cfg("finetune", ov))
    searched = search_app(compose_cfg("search", ov + ["name=s"]), command="test")
    bits = tmp_path / "runs" / "s" / "bits.json"
    m = qat_app(compose_cfg("qat", ov + [f"assignment={bits}", "quant.name=given"]), command="test")
    assert m["encoder_bytes"] == searched["encoder_bytes"] and m["dev_accuracy"] == searched["dev_accuracy"]
    assert m["method"] == "given" and m["scheme"] == "minmax" and m["emb_bits"] == 8
    ours = torch.load(tmp_path / "runs" / "sst2-bert-tiny-given" / "student.pt", weights_only=True)
    theirs = torch.load(tmp_path / "runs" / "s" / "retrain" / "student.pt", weights_only=True)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert BitAssignment.from_json(tmp_path / "runs" / "sst2-bert-tiny-given" / "bits.json") == BitAssignment.from_json(bits)


def test_given_assignment_needs_a_method_name_and_a_file(tmp_path: Path, glue_dir: Path) -> None:
    ov = _overrides(tmp_path, glue_dir)
    with pytest.raises(ValueError, match="quant.name=<method>"):
        qat_app(compose_cfg("qat", ov + ["assignment=bits.json"]))
    with pytest.raises(FileNotFoundError, match="no such file"):
        qat_app(compose_cfg("qat", ov + [f"assignment={tmp_path}/none.json", "quant.name=mine"]))
    with pytest.raises(ValueError, match="does not combine with staged"):
        qat_app(compose_cfg("qat", ov + ["recipe=progressive", "assignment=bits.json", "quant.name=mine"]))


def test_a_bits_file_missing_a_module_is_refused_before_training(tmp_path: Path, glue_dir: Path) -> None:
    """A module the file forgets would silently stay fp32: it fails naming the module (32 bits keeps one fp32)."""
    from amqs.train.qat import build_assignment, load_teacher

    ov = _overrides(tmp_path, glue_dir)
    finetune(compose_cfg("finetune", ov))
    cfg = compose_cfg("qat", ov + ["quant=w4a8"])
    full = build_assignment(load_teacher(cfg, 2)[0], cfg).to_dict()
    del full["modules"]["bert.encoder.layer.1.output.dense"]
    path = tmp_path / "partial.json"
    BitAssignment.from_dict(full).to_json(path)
    with pytest.raises(ValueError, match=r"partial\.json has no bits for bert\.encoder\.layer\.1\.output\.dense: "
                                         r"every quantized Linear needs an entry"):
        qat_app(compose_cfg("qat", ov + [f"assignment={path}", "quant.name=partial"]))
    assert not (tmp_path / "runs" / "sst2-bert-tiny-partial" / "train_log.jsonl").exists()


@pytest.mark.slow
def test_qat_on_your_own_files_gives_a_three_label_student(tmp_path: Path) -> None:
    """amqs-finetune then amqs-qat on a 3-class CSV (data=files): the student has 3 outputs and macro-F1."""
    import json
    import subprocess
    import sys

    from tests.test_finetune import FILES_OVERRIDES

    for app in ("amqs.finetune", "amqs.qat"):
        proc = subprocess.run([sys.executable, "-m", app, "debug=smoke", *FILES_OVERRIDES,
                               f"paths.results_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "runs" / "files-bert-tiny-w8a8"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "files" and 0.0 <= metrics["dev_macro_f1"] <= 1.0
    assert metrics["data_fingerprint"]["dev"]["rows"] == 6
    student = torch.load(run / "student.pt", weights_only=True)
    assert student["classifier.weight"].shape[0] == 3
    predictions = json.loads((run / "dev_predictions.json").read_text())
    assert sorted(predictions["labels"]) == [0, 0, 1, 1, 2, 2] and set(predictions["predictions"]) <= {0, 1, 2}


def test_a_missing_teacher_on_your_own_files_names_the_command_that_makes_it(tmp_path: Path) -> None:
    from tests.test_finetune import FILES_OVERRIDES, REVIEWS

    with pytest.raises(FileNotFoundError, match=r"make it with `amqs-finetune debug=smoke data=files data.task=files "
                                                 rf"data.train_file={REVIEWS / 'reviews_train.csv'} .*"
                                                 r"data.text_column=review data.label_column=stars "):
        qat_app(compose_cfg("qat", ["debug=smoke", *FILES_OVERRIDES, f"paths.results_dir={tmp_path}"]))
