"""amqs.data.files and data=files: your own CSV/TSV/JSON/JSONL text-classification files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from amqs.config import DataConfig
from amqs.data import Columns, DataError, load_glue, load_raw, read_texts, task_spec
from amqs.data.files import label_vocabulary, to_dataset

FILES = Path(__file__).resolve().parent / "files"
TRAIN, DEV = FILES / "reviews_train.csv", FILES / "reviews_dev.csv"
REVIEWS = Columns(text="review", label="stars")


def _cfg(**kw) -> DataConfig:
    base = dict(task="reviews", train_file=str(TRAIN), validation_file=str(DEV), text_column="review",
                label_column="stars", glue_dir=None)
    return DataConfig(**{**base, **kw})


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_three_string_labels_map_to_sorted_ids() -> None:
    spec = task_spec(_cfg())
    assert spec.name == "reviews" and spec.label_names == ("bad", "good", "ok") and spec.num_labels == 3
    assert spec.metrics == ("accuracy", "macro_f1")
    train, dev = load_raw(_cfg())
    assert train.column_names == ["text_a", "text_b", "label"]
    assert train.features["label"].names == ["bad", "good", "ok"]
    want = [("bad", "good", "ok").index(r["stars"]) for r in _rows(TRAIN)]
    assert train["label"] == want and train["text_a"][0] == "A warm, funny film with a big heart."
    assert dev["label"] == [1, 0, 2, 1, 0, 2] and dev["text_b"] == [None] * 6


def _jsonl(path: Path, recs: list[dict]) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in recs))


def test_integer_labels_sort_by_value(tmp_path: Path) -> None:
    ints = [{"t": f"row {i}", "y": y} for i, y in enumerate([10, 2, 1, 2])]
    assert label_vocabulary(read_texts(_jsonl(tmp_path / "d.jsonl", ints), Columns("t", "y"))) == ("1", "2", "10")


def test_jsonl_json_and_tsv_read_the_same_rows(tmp_path: Path) -> None:
    rows = _rows(TRAIN)
    jsonl = _jsonl(tmp_path / "t.jsonl", rows)
    as_json = _write(tmp_path / "t.json", json.dumps(rows, indent=2))
    tsv = _write(tmp_path / "t.tsv", "review\tstars\n" + "".join(f"{r['review']}\t{r['stars']}\n" for r in rows))
    want = read_texts(TRAIN, REVIEWS)
    for path in (jsonl, as_json, tsv):
        got = read_texts(path, REVIEWS)
        assert (got.text_a, got.labels) == (want.text_a, want.labels), path


def test_json_errors_name_the_element_line(tmp_path: Path) -> None:
    f = _write(tmp_path / "t.json", '[\n  {"review": "fine", "stars": "ok"},\n  {"review": "", "stars": "ok"}\n]')
    with pytest.raises(DataError, match=r"t\.json:3: empty text field 'review'"):
        read_texts(f, REVIEWS)
    f = _write(tmp_path / "l.jsonl", '{"review": "fine", "stars": "ok"}\n{"review": "x", "stars": \n')
    with pytest.raises(DataError, match=r"l\.jsonl:2: bad JSON"):
        read_texts(f, REVIEWS)
    f = _write(tmp_path / "o.json", '{"review": "fine"}')
    with pytest.raises(DataError, match=r"o\.json:1: expected a JSON list of objects"):
        read_texts(f, REVIEWS)


def test_text_pairs(tmp_path: Path) -> None:
    f = _write(tmp_path / "pairs.csv", "premise,hypothesis,label\nA cat sleeps.,An animal rests.,entailment\n"
               "A cat sleeps.,A dog barks.,neutral\nA cat sleeps.,The cat runs.,contradiction\n")
    cfg = DataConfig(task="nli", train_file=str(f), text_column="premise", text_pair_column="hypothesis",
                     validation_fraction=0.3, glue_dir=None)
    assert task_spec(cfg).label_names == ("contradiction", "entailment", "neutral")
    train, dev = load_raw(cfg)
    assert len(train) + len(dev) == 3 and len(dev) == 1
    assert all(b is not None for b in list(train["text_b"]) + list(dev["text_b"]))


@pytest.mark.parametrize("text,match", [
    ("review,stars\ngood film,good\nbad,film,bad\n", r"m\.csv:3: expected 2 comma-separated fields, got 3"),
    ("review,stars\ngood film,good\n  ,bad\n", r"m\.csv:3: empty text field 'review'"),
    ("review,stars\ngood film,good\nbad film,\n", r"m\.csv:3: empty label field 'stars'"),
    ("text,stars\ngood film,good\n", r"m\.csv:2: no text column 'review' \(the row has \['stars', 'text'\]\)"),
    ("review,stars\n", r"m\.csv: no data rows"),
])
def test_malformed_rows_name_file_and_line(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        read_texts(_write(tmp_path / "m.csv", text), REVIEWS)


def test_a_validation_label_not_in_train_names_file_and_line(tmp_path: Path) -> None:
    dev = _write(tmp_path / "dev.csv", "review,stars\nfine,ok\nsuperb,great\n")
    with pytest.raises(DataError, match=r"dev\.csv:3: label 'great' is not one of the train file's labels "
                                        r"\['bad', 'good', 'ok'\]"):
        load_raw(_cfg(validation_file=str(dev)))


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"x\.txt: unknown file type '\.txt'"):
        read_texts(_write(tmp_path / "x.txt", "a"), REVIEWS)
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        load_raw(_cfg(train_file=str(tmp_path / "nope.csv")))


def test_without_a_validation_file_dev_is_a_seeded_slice_of_train() -> None:
    cfg = _cfg(validation_file=None, validation_fraction=0.25, search_val_fraction=0.2, split_seed=1)
    a, b = load_glue(cfg), load_glue(cfg)
    assert a["dev"]["text_a"] == b["dev"]["text_a"] and len(a["dev"]) == 6
    seen = [set(a[k]["text_a"]) for k in ("train", "search_val", "dev")]
    assert sum(map(len, seen)) == 24 and not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    other = load_glue(_cfg(validation_file=None, validation_fraction=0.25, split_seed=2))
    assert other["dev"]["text_a"] != a["dev"]["text_a"]
    with pytest.raises(DataError, match=r"data\.validation_fraction must be in \(0, 1\), got 1\.5"):
        load_raw(_cfg(validation_file=None, validation_fraction=1.5))


def test_unlabelled_file_for_prediction(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "d.jsonl", [{"review": "fine"}, {"review": "awful"}])
    t = read_texts(f, REVIEWS, allow_unlabeled=True)
    assert t.labels is None and to_dataset(t, ("bad", "good", "ok"))["label"] == [-1, -1]
    with pytest.raises(DataError, match=r"d\.jsonl:1: no label column 'stars'"):
        read_texts(f, REVIEWS)


def test_the_files_preset_composes_and_needs_a_train_file(tmp_path: Path) -> None:
    from tests.conftest import compose_cfg

    cfg = compose_cfg("finetune", ["data=files", f"data.train_file={TRAIN}", "data.text_column=review",
                                   "data.label_column=stars"])
    assert cfg.data.task == "files" and task_spec(cfg.data).label_names == ("bad", "good", "ok")
    with pytest.raises(DataError, match=r"unknown task 'files' \(data.task\) and no data.train_file: .* data=files "
                                        r"data.train_file=<CSV, TSV, JSON or JSONL file>"):
        task_spec(compose_cfg("finetune", ["data=files"]).data)


def test_tsv_fields_are_unquoted_and_a_quoted_tsv_names_the_line(tmp_path: Path) -> None:
    t = read_texts(_write(tmp_path / "q.tsv", 'review\tstars\n"a" quote\tgood\nsaid "no\tbad\n'), REVIEWS)
    assert t.text_a == ('"a" quote', 'said "no')  # bare quotes are text, as in GLUE's MRPC
    with pytest.raises(DataError, match=r"x\.tsv:3: expected 2 tab-separated fields, got 3; TSV fields are read "
                                        r"unquoted: a file with quoted fields is read as CSV"):
        read_texts(_write(tmp_path / "x.tsv", 'review\tstars\nok\tgood\n"tab\tinside"\tbad\n'), REVIEWS)


@pytest.mark.parametrize("task,folder,text,pair,label", [("mrpc", "MRPC", "#1 String", "#2 String", "Quality"),
                                                         ("sst2", "SST-2", "sentence", None, "label")])
def test_glue_through_the_files_path_gives_the_presets_rows(glue_dir: Path, task: str, folder: str, text: str,
                                                            pair: str | None, label: str) -> None:
    preset = load_glue(DataConfig(task=task, glue_dir=str(glue_dir)))
    files = load_glue(DataConfig(task=task, train_file=str(glue_dir / folder / "train.tsv"), glue_dir=None,
                                 validation_file=str(glue_dir / folder / "dev.tsv"), text_column=text,
                                 text_pair_column=pair, label_column=label))
    for split in ("train", "search_val", "dev"):
        assert preset[split].features == files[split].features
        assert preset[split][:] == files[split][:], split
