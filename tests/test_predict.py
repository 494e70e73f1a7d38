"""amqs-predict (amqs.predict): a GLUE-layout TSV through an exported tiny model."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from amqs.data import Columns, DataError
from amqs.predict import main as predict_main, predict_file
from amqs.runtime import ExportedModel
from tests.test_runtime import TinyExports, tiny_exports

SENTENCES = ["a gripping , funny film", "dull", "the plot goes nowhere", "an utterly charming delight",
             "i walked out", "it 's a masterpiece of tension"]
LABELS = [1, 0, 0, 1, 0, 1]


@pytest.fixture
def tiny(tmp_path_factory: pytest.TempPathFactory, glue_dir: Path) -> TinyExports:
    return tiny_exports(tmp_path_factory, glue_dir)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _labelled(tmp_path: Path) -> Path:
    rows = "".join(f"{s}\t{y}\n" for s, y in zip(SENTENCES, LABELS))
    return _write(tmp_path / "dev.tsv", "sentence\tlabel\n" + rows)


def _unlabelled(tmp_path: Path) -> Path:
    return _write(tmp_path / "test.tsv", "index\tsentence\n" + "".join(f"{i}\t{s}\n" for i, s in enumerate(SENTENCES)))


def _read_predictions(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(header, predicted ids, logits), checking the label names and probabilities between them."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    header, body = rows[0], rows[1:]
    assert [int(r[0]) for r in body] == list(range(len(body)))
    k = sum(h.startswith("logit_") for h in header)
    names = [h.removeprefix("prob_") for h in header[3:3 + k]]
    preds = np.array([int(r[1]) for r in body])
    assert [r[2] for r in body] == [names[p] for p in preds]
    probs, logits = (np.array([[float(v) for v in r[a:b]] for r in body]) for a, b in ((3, 3 + k), (3 + k, None)))
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(probs, shifted / shifted.sum(-1, keepdims=True), rtol=1e-4, atol=1e-6)
    return header, preds, logits


def test_labelled_file_gives_accuracy_and_predictions(tiny: TinyExports, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.chdir(tmp_path)
    result = predict_file(tiny.quant_export, _labelled(data), batch_size=4, threads=1)
    # the default output: never beside the input, named by the export and the input's folder
    out = Path("outputs") / "predictions" / tiny.quant_export.name / "data-dev.tsv"
    assert result["output"] == str(out) and result["examples"] == len(SENTENCES)
    assert sorted(p.name for p in data.iterdir()) == ["dev.tsv"]
    header, preds, logits = _read_predictions(out)
    assert header == ["index", "prediction", "label", "prob_negative", "prob_positive", "logit_0", "logit_1"]
    assert logits.shape == (len(SENTENCES), 2)
    np.testing.assert_array_equal(preds, logits.argmax(-1))
    assert result["accuracy"] == pytest.approx(float((preds == np.array(LABELS)).mean()))
    # the logits written are the model's (printed with 6 significant digits)
    direct = ExportedModel(tiny.quant_export).predict_logits(SENTENCES)
    np.testing.assert_allclose(logits, direct, rtol=1e-5, atol=1e-9)


def test_unlabelled_file_has_no_metrics(tiny: TinyExports, tmp_path: Path) -> None:
    labelled = predict_file(tiny.quant_export, _labelled(tmp_path), tmp_path / "a.tsv")
    result = predict_file(tiny.quant_export, _unlabelled(tmp_path), tmp_path / "b.tsv")
    assert set(result) == {"examples", "output"} and result["examples"] == len(SENTENCES)
    assert "accuracy" in labelled
    _, preds_a, logits_a = _read_predictions(tmp_path / "a.tsv")
    _, preds_b, logits_b = _read_predictions(tmp_path / "b.tsv")
    np.testing.assert_array_equal(preds_a, preds_b)
    np.testing.assert_allclose(logits_a, logits_b, rtol=1e-6)


def test_cli_prints_json(tiny: TinyExports, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "custom.tsv"
    predict_main([str(tiny.quant_export), "--input", str(_labelled(tmp_path)), "--output", str(out),
                  "--batch-size", "2", "--threads", "1"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["output"] == str(out) and out.is_file() and 0.0 <= printed["accuracy"] <= 1.0


def _exits_with_one_line(call, pattern: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        call()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert re.match(pattern, err), err


def test_malformed_row_names_file_and_line(tiny: TinyExports, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path / "bad.tsv", "sentence\tlabel\ngood film\t1\nno label here\n")
    with pytest.raises(DataError, match=r"bad\.tsv:3: expected 2 tab-separated fields, got 1"):
        predict_file(tiny.quant_export, f)
    _exits_with_one_line(lambda: predict_main([str(tiny.quant_export), "--input", str(f), "--output",
                                               str(tmp_path / "bad.out.tsv")]), r"amqs-predict: .*bad\.tsv:3:", capsys)
    assert not (tmp_path / "bad.out.tsv").exists()


def test_missing_export_folder_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path / "dev.tsv", "sentence\tlabel\nok\t1\n")
    _exits_with_one_line(lambda: predict_main([str(tmp_path / "nothing"), "--input", str(f)]),
                         r"amqs-predict: .*nothing: no such export folder", capsys)


def test_missing_input_file_names_the_file_not_the_data_setting(tiny: TinyExports, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _exits_with_one_line(lambda: predict_main([str(tiny.quant_export), "--input", str(tmp_path / "nope.tsv")]),
                         r"amqs-predict: .*nope\.tsv: no such file  \(AMQS_DEBUG", capsys)


# your own files (data=files): a 3-class model, CSV/JSONL input with column options, label names out

REVIEWS = Path(__file__).resolve().parent / "data" / "files"
_FILES_EXPORT: dict[str, Path] = {}


@pytest.fixture
def reviews_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """(Once per session) a tiny teacher and w8a8 student on the 3-class reviews CSV, exported."""
    if "export" not in _FILES_EXPORT:
        from amqs.export.app import export_run
        from amqs.finetune import run as finetune
        from amqs.train.qat import run_qat
        from tests.conftest import compose_cfg
        from tests.test_finetune import FILES_OVERRIDES

        root = tmp_path_factory.mktemp("reviews")
        ov = ["debug=smoke", *FILES_OVERRIDES, f"paths.results_dir={root}", "data.task=reviews"]
        finetune(compose_cfg("finetune", ov))
        run_qat(compose_cfg("qat", ov))
        _FILES_EXPORT["export"] = root / "exports" / "reviews"
        export_run(root / "runs" / "reviews-bert-tiny-w8a8", _FILES_EXPORT["export"], threads=1, results_dir=root)
    return _FILES_EXPORT["export"]


@pytest.mark.slow
def test_a_csv_with_column_options_gives_label_names_and_macro_f1(reviews_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.tsv"
    result = predict_file(reviews_export, REVIEWS / "reviews_dev.csv", out, columns=Columns("review", "stars"))
    header, preds, logits = _read_predictions(out)
    assert header[2:6] == ["label", "prob_bad", "prob_good", "prob_ok"] and logits.shape == (6, 3)
    truth = np.array([1, 0, 2, 1, 0, 2])  # good bad ok, twice
    assert result["accuracy"] == pytest.approx(float((preds == truth).mean()))
    assert 0.0 <= result["macro_f1"] <= 1.0 and "f1" not in result
    texts = [r["review"] for r in csv.DictReader((REVIEWS / "reviews_dev.csv").open())]
    np.testing.assert_allclose(logits, ExportedModel(reviews_export).predict_logits(texts), rtol=1e-5, atol=1e-9)


@pytest.mark.slow
def test_an_unlabelled_jsonl_and_an_unknown_label(reviews_export: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path / "new.jsonl", '{"text": "A lovely film."}\n{"text": "Dreary."}\n')
    assert set(predict_file(reviews_export, f, tmp_path / "a.tsv")) == {"examples", "output"}  # default: text
    bad = _write(tmp_path / "bad.csv", "review,stars\nfine,ok\nsuperb,great\n")
    capsys.readouterr()  # the prediction's progress bars
    _exits_with_one_line(lambda: predict_main([str(reviews_export), "--input", str(bad), "--text-column", "review",
                                               "--label-column", "stars", "--output", str(tmp_path / "b.tsv")]),
                         r"amqs-predict: .*bad\.csv:3: label 'great' is not one of the model's labels "
                         r"\['bad', 'good', 'ok'\]", capsys)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["files", "dataset"])
def test_your_data_finetune_search_export_predict(source: str, tmp_path: Path) -> None:
    """Issue 16's path for data that is not GLUE-shaped: the 3-class reviews as CSV files, or as a `datasets`
    folder (parquet, ClassLabel in another order): fine-tune -> search (smoke) -> export -> predict."""
    import datasets

    from amqs.export.app import export_run
    from amqs.finetune import run as finetune
    from amqs.search.app import run as search
    from tests.conftest import compose_cfg
    from tests.test_finetune import FILES_OVERRIDES

    data = FILES_OVERRIDES
    if source == "dataset":
        names = ["ok", "good", "bad"]
        for split, f in (("train", "reviews_train.csv"), ("validation", "reviews_dev.csv")):
            rows = list(csv.DictReader((REVIEWS / f).open()))
            feats = datasets.Features({"review": datasets.Value("string"), "stars": datasets.ClassLabel(names=names)})
            datasets.Dataset.from_dict({"review": [r["review"] for r in rows],
                                        "stars": [names.index(r["stars"]) for r in rows]},
                                       features=feats).to_parquet(str(tmp_path / f"{split}.parquet"))
        data = ["data=dataset", f"data.dataset={tmp_path}", "data.text_column=review", "data.label_column=stars"]
    ov = ["debug=smoke", *data, f"paths.results_dir={tmp_path}", "data.task=reviews"]
    finetune(compose_cfg("finetune", ov))
    cfg = compose_cfg("search", ov)
    metrics = search(cfg, command="test")
    assert 0.0 <= metrics["dev_macro_f1"] <= 1.0
    export = tmp_path / "exports" / "reviews"
    facts = export_run(tmp_path / "runs" / cfg.name, export, threads=1, results_dir=tmp_path)
    assert facts["num_labels"] == 3 and facts["prediction_agreement"] == 1.0
    expected = ["ok", "good", "bad"] if source == "dataset" else ["bad", "good", "ok"]
    assert json.loads((export / "config.json").read_text())["id2label"] == {str(i): n for i, n in enumerate(expected)}
    result = predict_file(export, REVIEWS / "reviews_dev.csv", tmp_path / "p.tsv", columns=Columns("review", "stars"))
    header, _, logits = _read_predictions(tmp_path / "p.tsv")
    assert header[3:6] == [f"prob_{n}" for n in expected] and logits.shape == (6, 3)
    assert result["examples"] == 6 and 0.0 <= result["accuracy"] <= 1.0
