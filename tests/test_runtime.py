"""amqs-export of finished tiny runs (amqs.export.app) and loading the result (amqs.runtime).

:func:`tiny_exports` trains, like tests/train/test_qat.py, a smoke-size teacher and two QAT runs
on a few dozen SST-2 rows (a second or two): a mixed-precision run whose bits.json prunes head 1
of layer 0 and some FFN neurons, and the fp32 run; then exports both with the real
``export_run``. test_predict.py and test_bench.py reuse the same folders (built once per session).
"""

from __future__ import annotations

import csv
import re
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoConfig, BertForSequenceClassification

from amqs.export.app import export_run, load_run, main as export_main, resolve_run
from amqs.runtime import EXPORT_FILE, MODEL_FILE, ExportedModel, ExportError, load_session, read_export_meta
from tests.conftest import compose_cfg

PRUNED_FFN_ROWS = list(range(0, 128, 4))  # layer 0 intermediate.dense: one subgroup per row (128 of 128)
PRUNED_HEAD = 1  # layer 0: value rows 16..31 (64 subgroups of one row)


@dataclass(frozen=True)
class TinyExports:
    root: Path
    quant_run: Path
    fp32_run: Path
    quant_export: Path
    fp32_export: Path
    quant_facts: dict[str, Any]


_CACHE: dict[str, TinyExports] = {}


def tiny_exports(tmp_path_factory: pytest.TempPathFactory, glue_dir: Path) -> TinyExports:
    """Build (once per session) two finished tiny runs and their exports."""
    if "exports" in _CACHE:
        return _CACHE["exports"]
    from amqs.finetune import run as finetune
    from amqs.train.qat import build_assignment, load_teacher, run_qat

    root = tmp_path_factory.mktemp("tiny_exports")
    overrides = ["debug=smoke", f"paths.results_dir={root}", f"data.glue_dir={glue_dir}",
                 "data.max_train_examples=64", "data.max_search_val_examples=16", "data.max_dev_examples=32"]
    finetune(compose_cfg("finetune", overrides))
    cfg = compose_cfg("qat", overrides + ["quant=w4a8", "name=sst2-mixed"])
    teacher, _ = load_teacher(cfg, 2)
    a = build_assignment(teacher, cfg)
    value = [8] * 64
    value[16 * PRUNED_HEAD:16 * (PRUNED_HEAD + 1)] = [0] * 16
    inter = [0 if i in PRUNED_FFN_ROWS else (2, 4, 8)[i % 3] for i in range(128)]
    a = a.with_bits({"bert.encoder.layer.0.attention.self.value": value,
                     "bert.encoder.layer.0.intermediate.dense": inter,
                     "bert.encoder.layer.1.output.dense": [(2, 8)[i % 2] for i in range(64)]})
    run_qat(cfg, a)
    run_qat(compose_cfg("qat", overrides + ["quant=fp32", "name=sst2-fp32"]))
    runs = root / "runs"
    facts = export_run(runs / "sst2-mixed", root / "exports" / "mixed", threads=1, results_dir=root, command="test")
    export_run(runs / "sst2-fp32", root / "exports" / "fp32", evaluate=False, results_dir=root)
    _CACHE["exports"] = TinyExports(root, runs / "sst2-mixed", runs / "sst2-fp32", root / "exports" / "mixed",
                                    root / "exports" / "fp32", facts)
    return _CACHE["exports"]


@pytest.fixture
def tiny(tmp_path_factory: pytest.TempPathFactory, glue_dir: Path) -> TinyExports:
    return tiny_exports(tmp_path_factory, glue_dir)


@pytest.fixture
def export_copy(tiny: TinyExports, tmp_path: Path) -> Path:
    """A private copy of the mixed export, to damage."""
    return Path(shutil.copytree(tiny.quant_export, tmp_path / "export"))


# ---------------------------------------------------------------- amqs-export (amqs.export.app)


def test_export_folder_contents_and_facts(tiny: TinyExports) -> None:
    d = tiny.quant_export
    for name in (MODEL_FILE, EXPORT_FILE, "config.json", "tokenizer.json", "bits.json", "metrics.json"):
        assert (d / name).is_file(), name
    meta = read_export_meta(d)
    assert (meta["format"], meta["version"], meta["task"], meta["num_labels"], meta["max_length"]) == (
        "amqs-export", 1, "sst2", 2, 32)
    assert meta["file_bytes"] == (d / MODEL_FILE).stat().st_size
    assert meta["removed_heads"] == {"0": [PRUNED_HEAD]}
    assert meta["removed_ffn_neurons"] == len(PRUNED_FFN_ROWS)
    assert meta["removed_ffn_fraction"] == pytest.approx(len(PRUNED_FFN_ROWS) / 256)
    assert meta["integer_matrices"] == 12
    assert (d / "bits.json").read_text() == (tiny.quant_run / "bits.json").read_text()
    run_metrics = json.loads((tiny.quant_run / "metrics.json").read_text())
    assert meta["compression"] == run_metrics["compression"]
    assert meta["accounted_bytes"] == run_metrics["total_bytes"]
    written = json.loads((d / "metrics.json").read_text())
    assert written["run"] == run_metrics and written["export"] == meta


def test_export_parity_on_dev(tiny: TinyExports) -> None:
    f = tiny.quant_facts
    assert f["dev_examples"] == 32
    assert f["max_logit_diff"] < 1e-5
    assert f["dev_accuracy_exported"] == f["dev_accuracy_fakequant"] and f["prediction_agreement"] == 1.0
    with (tiny.root / "exports.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["source"] == str(tiny.quant_run)
    assert int(rows[0]["file_bytes"]) == f["file_bytes"] and rows[0]["removed_heads"] == "1"
    assert float(rows[0]["max_logit_diff"]) == pytest.approx(f["max_logit_diff"])


def test_exported_model_predicts_raw_texts_like_pytorch(tiny: TinyExports) -> None:
    texts = ["a gripping , funny film", "dull", "the plot goes nowhere , slowly and at great length"]
    m = ExportedModel(tiny.quant_export, threads=1)
    logits = m.predict_logits(texts, batch_size=2)
    assert logits.shape == (3, 2) and logits.dtype == np.float32
    student, tokenizer, *_ = load_run(tiny.quant_run)
    with torch.no_grad():
        ref = torch.cat([student(**tokenizer([t], return_tensors="pt")).logits for t in texts]).numpy()
    np.testing.assert_allclose(logits, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()))
    # one at a time (no padding) gives the same logits as padded batches
    np.testing.assert_allclose(m.predict_logits(texts, batch_size=1), logits, rtol=0, atol=1e-6)


def _bias_lengths(export: Path) -> dict[str, int]:
    """Length of every stored bias of the exported graph, by module name (the graph builder numbers its names)."""
    model = onnx.load(str(export / MODEL_FILE))
    return {t.name.rsplit("_", 1)[0][:-len(".bias")]: int(t.dims[0]) for t in model.graph.initializer
            if t.name.rsplit("_", 1)[0].endswith(".bias")}


@pytest.mark.parametrize("which", ["quant", "fp32"])
def test_export_config_describes_the_exported_graph(tiny: TinyExports, which: str) -> None:
    """config.json says what the graph computes with: per layer the heads and FFN width of the ONNX tensors, the
    removed head in HF's pruned_heads (which BertConfig reads and prunes by), and SST-2's label names (the tiny
    teacher has only HF's LABEL_<i>)."""
    export = tiny.quant_export if which == "quant" else tiny.fp32_export
    config = json.loads((export / "config.json").read_text())
    heads, inter = config["amqs"]["num_attention_heads"], config["amqs"]["intermediate_size"]
    if which == "quant":
        assert config["pruned_heads"] == {"0": [PRUNED_HEAD]}
        assert heads == [3, 4] and inter == [128 - len(PRUNED_FFN_ROWS), 128]
    else:
        assert "pruned_heads" not in config and heads == [4, 4] and inter == [128, 128]
    biases, d = _bias_lengths(export), config["amqs"]["attention_head_size"]
    for i in range(config["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}."
        assert [biases[p + f"attention.self.{m}"] for m in ("query", "key", "value")] == [heads[i] * d] * 3
        assert biases[p + "intermediate.dense"] == inter[i]
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    hf = AutoConfig.from_pretrained(export)  # what Optimum and transformers read
    assert hf.model_type == "bert" and hf.id2label == {0: "negative", 1: "positive"}
    pruned = BertForSequenceClassification(hf).bert.encoder.layer[0].attention.self
    assert pruned.query.out_features == heads[0] * d and pruned.num_attention_heads == heads[0]


def test_fp32_export_matches_the_fp32_run(tiny: TinyExports) -> None:
    meta = read_export_meta(tiny.fp32_export)
    assert meta["integer_matrices"] == 0 and meta["removed_heads"] == {}
    assert not (tiny.fp32_export / "bits.json").exists()
    student, tokenizer, _, assignment, _ = load_run(tiny.fp32_run)
    assert assignment is None
    enc = tokenizer(["an utterly charming delight", "no"], padding=True, return_tensors="np")
    m = ExportedModel(tiny.fp32_export)
    got = m.run(enc["input_ids"], enc["attention_mask"])  # token types default to zeros
    with torch.no_grad():
        ref = student(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * float(np.abs(ref).max()))


def test_keep_pruned_cli(tiny: TinyExports, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "kept"
    export_main([str(tiny.quant_run), "--out", str(out), "--no-eval", "--keep-pruned", "--results", str(tmp_path)])
    assert "file_bytes" in capsys.readouterr().out
    meta = read_export_meta(out)
    assert meta["removed_heads"] == {} and meta["removed_ffn_neurons"] == 0
    assert not (tmp_path / "exports.csv").exists()  # --no-eval writes no row
    texts = ["a gripping , funny film", "dull"]
    np.testing.assert_allclose(ExportedModel(out).predict_logits(texts),
                               ExportedModel(tiny.quant_export).predict_logits(texts), rtol=0, atol=1e-5)


def test_cli_reports_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        export_main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert re.match(r"amqs-export: .*nowhere: no such run folder", err)


def test_resolve_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "retrain").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no student.pt"):
        resolve_run(run)
    for name in ("student.pt", "config.yaml"):
        (run / name).write_text("x")
        (run / "retrain" / name).write_text("x")
    with pytest.raises(FileNotFoundError, match=r"retrain/metrics\.json missing"):
        resolve_run(run)  # a search run: retrain/ wins over the folder itself
    (run / "retrain" / "metrics.json").write_text("{}")
    assert resolve_run(run) == run / "retrain"


# ---------------------------------------------------------------- broken export folders (amqs.runtime)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="gone: no such export folder"):
        ExportedModel(tmp_path / "gone")


def test_missing_export_json(export_copy: Path) -> None:
    (export_copy / EXPORT_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"export\.json not found"):
        ExportedModel(export_copy)


@pytest.mark.parametrize("content,message", [
    ('{"format": "amqs-export", "vers', r"export\.json: corrupted"),
    (b"\xff\xfe\x00garbage", r"export\.json: corrupted"),
    ("[1, 2]", r"export\.json: not an amqs-export file"),
    ('{"format": "onnx"}', r"export\.json: not an amqs-export file"),
])
def test_corrupted_export_json(export_copy: Path, content: str | bytes, message: str) -> None:
    f = export_copy / EXPORT_FILE
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ExportError, match=message):
        ExportedModel(export_copy)


def test_wrong_version_and_missing_key(export_copy: Path) -> None:
    f = export_copy / EXPORT_FILE
    meta = json.loads(f.read_text())
    f.write_text(json.dumps({**meta, "version": 2}))
    with pytest.raises(ExportError, match=r"export\.json: format version 2 is not supported"):
        ExportedModel(export_copy)
    del meta["max_length"]
    f.write_text(json.dumps(meta))
    with pytest.raises(ExportError, match=r"export\.json: missing key 'max_length'"):
        ExportedModel(export_copy)


def test_missing_model_onnx(export_copy: Path) -> None:
    (export_copy / MODEL_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.onnx: ONNX model not found"):
        ExportedModel(export_copy)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unloadable_model_onnx(export_copy: Path, damage: str) -> None:
    f = export_copy / MODEL_FILE
    data = f.read_bytes()
    f.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not an onnx model\n" * 100,
                   "empty": b""}[damage])
    with pytest.raises(ExportError, match=r"model\.onnx: not a loadable ONNX model"):
        ExportedModel(export_copy)
    with pytest.raises(ExportError, match=r"model\.onnx"):
        load_session(f)


def test_missing_tokenizer(export_copy: Path) -> None:
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (export_copy / name).unlink()
    with pytest.raises(ExportError, match="tokenizer files missing or corrupted"):
        ExportedModel(export_copy)


def test_a_debug_run_is_never_exported_into_the_measured_tables(tiny: TinyExports, tmp_path: Path) -> None:
    """The tiny runs are debug=smoke runs: their exports.csv row may not land in results/ (nothing is written)."""
    from amqs.utils.run import TRACKED_RESULTS

    with pytest.raises(ValueError, match="a debug run \\(debug=smoke\\) never writes there"):
        export_run(tiny.quant_run, tmp_path / "out", threads=1, results_dir=TRACKED_RESULTS)
    assert not (tmp_path / "out").exists()
