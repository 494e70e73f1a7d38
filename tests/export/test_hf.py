"""amqs-export --format hf (amqs.export.hf): the dequantized student as a save_pretrained folder.

Reuses the tiny finished runs of tests/test_runtime.py (a mixed-precision run with a pruned head and pruned FFN
rows). The reference for the folder's logits is the fake-quantized student with its activation quantizers off
(the one thing HF layers do not do); the folder must reproduce it to float rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from amqs.export.app import load_run, main as export_main
from amqs.export.hf import HF_FACTS_FILE, dequantized_model
from amqs.quant.surgery import quantized_modules
from tests.test_runtime import TinyExports, tiny_exports

TEXTS = ["a gripping , funny film", "dull", "the plot goes nowhere , slowly and at great length"]


@pytest.fixture
def tiny(tmp_path_factory: pytest.TempPathFactory, glue_dir: Path) -> TinyExports:
    return tiny_exports(tmp_path_factory, glue_dir)


def _logits(model: torch.nn.Module, tokenizer, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(texts, return_tensors="pt", padding=True)).logits


def _without_act_quant(student: torch.nn.Module) -> torch.nn.Module:
    for m in quantized_modules(student).values():
        if hasattr(m, "act_quant"):
            m.act_quant.bits = None
    return student


def test_dequantized_model_is_the_student_without_activation_quantization(tiny: TinyExports) -> None:
    student, tokenizer, *_ = load_run(tiny.quant_run)
    plain = dequantized_model(student)
    assert not quantized_modules(plain) and type(plain) is type(student)
    w = plain.bert.encoder.layer[0].intermediate.dense.weight
    assert torch.count_nonzero(w[0::4]) == 0  # the pruned FFN rows are zero
    reference = _logits(_without_act_quant(student), tokenizer, TEXTS)
    torch.testing.assert_close(_logits(plain, tokenizer, TEXTS), reference, rtol=0, atol=1e-5)


def test_hf_folder_loads_with_automodel(tiny: TinyExports, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hf"
    export_main([str(tiny.quant_run), "--out", str(out), "--format", "hf", "--results", str(tmp_path)])
    for name in ("config.json", "model.safetensors", "tokenizer.json", "bits.json", HF_FACTS_FILE, "metrics.json"):
        assert (out / name).is_file(), name
    assert (out / "bits.json").read_text() == (tiny.quant_run / "bits.json").read_text()
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert model.config.id2label == {0: "negative", 1: "positive"} and model.config.label2id["positive"] == 1
    student, tokenizer, *_ = load_run(tiny.quant_run)
    reference = _logits(_without_act_quant(student), tokenizer, TEXTS)
    torch.testing.assert_close(_logits(model, tokenizer, TEXTS), reference, rtol=0, atol=1e-5)
    parity = json.loads((out / "metrics.json").read_text())["parity_hf"]
    assert parity["dev_examples"] == 32 and 0.0 <= parity["prediction_agreement"] <= 1.0
    assert "dev_accuracy_hf" in parity and "dev_accuracy_fakequant" in parity
    assert not (tmp_path / "exports.csv").exists()  # the ONNX table has no HF rows


def test_both_formats(tiny: TinyExports, tmp_path: Path) -> None:
    out = tmp_path / "both"
    export_main([str(tiny.quant_run), "--out", str(out), "--format", "both", "--no-eval"])
    assert (out / "model.onnx").is_file() and (out / "hf" / "model.safetensors").is_file()
    AutoModelForSequenceClassification.from_pretrained(out / "hf")


def test_unknown_format_is_one_line(tiny: TinyExports, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        export_main([str(tiny.quant_run), "--out", str(tmp_path / "x"), "--format", "tflite"])
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
