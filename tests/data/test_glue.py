from __future__ import annotations

from pathlib import Path

import pytest

from amqs.config import DataConfig
from amqs.data import DataError, get_task, load_glue, load_raw, read_glue_tsv, split_search_val


@pytest.mark.parametrize("task,train_rows,dev_rows", [("sst2", 67_349, 872), ("mrpc", 3_668, 408)])
def test_shared_tsv_row_counts(glue_dir: Path, task: str, train_rows: int, dev_rows: int) -> None:
    train, dev = load_raw(DataConfig(task=task, glue_dir=str(glue_dir)))
    assert (len(train), len(dev)) == (train_rows, dev_rows)
    assert set(train.unique("label")) == {0, 1}


def test_sst2_label_balance_and_columns(glue_dir: Path) -> None:
    train, dev = load_raw(DataConfig(task="sst2", glue_dir=str(glue_dir)))
    assert sum(train["label"]) == 37_569 and sum(dev["label"]) == 444  # shared/data/README.md
    assert dev[0]["text_b"] is None and dev[0]["text_a"]


def test_mrpc_pairs_and_bom(glue_dir: Path) -> None:
    train, _ = load_raw(DataConfig(task="mrpc", glue_dir=str(glue_dir)))
    row = train[0]
    assert row["text_a"].startswith("Amrozi accused") and row["text_b"].startswith("Referring to him")


def test_search_val_split_is_seeded_disjoint_and_sized(glue_dir: Path) -> None:
    cfg = DataConfig(task="mrpc", glue_dir=str(glue_dir), search_val_fraction=0.1, split_seed=3)
    a, b = load_glue(cfg), load_glue(cfg)
    assert a["search_val"]["text_a"] == b["search_val"]["text_a"]
    assert len(a["search_val"]) == round(0.1 * 3_668)
    assert len(a["train"]) + len(a["search_val"]) == 3_668
    train_pairs = set(zip(a["train"]["text_a"], a["train"]["text_b"]))
    assert not train_pairs & set(zip(a["search_val"]["text_a"], a["search_val"]["text_b"]))
    assert len(a["dev"]) == 408  # dev untouched
    other = load_glue(DataConfig(task="mrpc", glue_dir=str(glue_dir), split_seed=4))
    assert other["search_val"]["text_a"] != a["search_val"]["text_a"]


def test_caps_apply_after_split(glue_dir: Path) -> None:
    cfg = DataConfig(task="sst2", glue_dir=str(glue_dir), max_train_examples=100, max_search_val_examples=20,
                     max_dev_examples=30)
    splits = load_glue(cfg)
    assert [len(splits[k]) for k in ("train", "search_val", "dev")] == [100, 20, 30]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_malformed_row_names_file_and_line(tmp_path: Path) -> None:
    f = _write(tmp_path / "SST-2" / "train.tsv", "sentence\tlabel\ngood film\t1\nextra\tfield\t0\n")
    with pytest.raises(DataError, match=r"train\.tsv:3: expected 2 tab-separated fields, got 3"):
        read_glue_tsv(f, get_task("sst2"))


def test_bad_label_names_file_and_line(tmp_path: Path) -> None:
    f = _write(tmp_path / "SST-2" / "dev.tsv", "sentence\tlabel\nok\t1\nbad\tpositive\n")
    with pytest.raises(DataError, match=r"dev\.tsv:3: label must be 0 or 1, got 'positive'"):
        read_glue_tsv(f, get_task("sst2"))


def test_bad_header(tmp_path: Path) -> None:
    f = _write(tmp_path / "x.tsv", "text\tlabel\nok\t1\n")
    with pytest.raises(DataError, match=r"x\.tsv:1: expected header"):
        read_glue_tsv(f, get_task("sst2"))


def test_bom_is_accepted(tmp_path: Path) -> None:
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    f = _write(tmp_path / "m.tsv", "\ufeff" + header + "1\t1\t2\tA cat.\tA feline.\n")
    ds = read_glue_tsv(f, get_task("mrpc"))
    assert ds[0] == {"text_a": "A cat.", "text_b": "A feline.", "label": 1}


def test_missing_folder_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.glue_dir"):
        load_raw(DataConfig(task="sst2", glue_dir=str(tmp_path / "nowhere")))


def test_missing_file_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "SST-2").mkdir()
    with pytest.raises(DataError, match=r"SST-2 has no train\.tsv or dev\.tsv: data\.glue_dir"):
        load_raw(DataConfig(task="sst2", glue_dir=str(tmp_path)))


def test_a_missing_file_outside_a_data_folder_names_only_the_file(tmp_path: Path) -> None:
    """amqs-predict reads any TSV: a missing one is not a data.glue_dir problem."""
    with pytest.raises(DataError, match=r"^.*nope\.tsv: no such file$"):
        read_glue_tsv(tmp_path / "nope.tsv", get_task("sst2"))


def test_no_data_folder_and_no_hub_fails_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without AMQS_GLUE_DIR on a machine that cannot reach the hub: one line naming the fix, no 30 s of retries."""
    import time

    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="hub is unreachable from here: set AMQS_GLUE_DIR"):
        load_raw(DataConfig(task="sst2", glue_dir=None))
    assert time.perf_counter() - t0 < 5
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # offline and nothing cached: the same hint
    with pytest.raises(DataError, match="could not load glue/sst2 .*: set AMQS_GLUE_DIR"):
        load_raw(DataConfig(task="sst2", glue_dir=None))


def test_unknown_task() -> None:
    with pytest.raises(DataError, match="unknown task 'cola'"):
        get_task("cola")


def test_bad_fraction(glue_dir: Path) -> None:
    train, _ = load_raw(DataConfig(task="mrpc", glue_dir=str(glue_dir)))
    with pytest.raises(DataError, match="search_val_fraction"):
        split_search_val(train, 1.5, 0)


# read_glue_tsv(allow_unlabeled=True): GLUE's test.tsv layout (no label column), as amqs-predict reads


def test_unlabeled_sst2_test_layout(tmp_path: Path) -> None:
    f = _write(tmp_path / "test.tsv", "index\tsentence\n0\tuneasy mishmash of styles\n1\ta fine film\n")
    ds = read_glue_tsv(f, get_task("sst2"), allow_unlabeled=True)
    assert ds["text_a"] == ["uneasy mishmash of styles", "a fine film"]
    assert ds["label"] == [-1, -1] and ds["text_b"] == [None, None]


def test_unlabeled_mrpc_pairs(tmp_path: Path) -> None:
    header = "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    f = _write(tmp_path / "test.tsv", "\ufeff" + header + "0\t1\t2\tA cat.\tA feline.\n")
    ds = read_glue_tsv(f, get_task("mrpc"), allow_unlabeled=True)
    assert ds[0] == {"text_a": "A cat.", "text_b": "A feline.", "label": -1}


def test_allow_unlabeled_still_reads_labels(tmp_path: Path) -> None:
    f = _write(tmp_path / "dev.tsv", "sentence\tlabel\ngood\t1\nbad\t0\n")
    assert read_glue_tsv(f, get_task("sst2"), allow_unlabeled=True)["label"] == [1, 0]


def test_unlabeled_file_needs_the_flag(tmp_path: Path) -> None:
    f = _write(tmp_path / "test.tsv", "index\tsentence\n0\tok\n")
    with pytest.raises(DataError, match=r"test\.tsv:1: expected header \['sentence', 'label'\], got"):
        read_glue_tsv(f, get_task("sst2"))


def test_unlabeled_header_needs_the_text_columns(tmp_path: Path) -> None:
    f = _write(tmp_path / "test.tsv", "index\ttext\n0\tok\n")
    with pytest.raises(DataError, match=r"test\.tsv:1: expected header .* or at least \['sentence'\]"):
        read_glue_tsv(f, get_task("sst2"), allow_unlabeled=True)


def test_unlabeled_bad_rows_name_file_and_line(tmp_path: Path) -> None:
    f = _write(tmp_path / "test.tsv", "index\tsentence\n0\tok\n1\tfine\textra\n")
    with pytest.raises(DataError, match=r"test\.tsv:3: expected 2 tab-separated fields, got 3"):
        read_glue_tsv(f, get_task("sst2"), allow_unlabeled=True)
    f = _write(tmp_path / "empty.tsv", "index\tsentence\n0\tok\n1\t  \n")
    with pytest.raises(DataError, match=r"empty\.tsv:3: empty text field"):
        read_glue_tsv(f, get_task("sst2"), allow_unlabeled=True)
    f = _write(tmp_path / "none.tsv", "index\tsentence\n")
    with pytest.raises(DataError, match=r"none\.tsv: no data rows"):
        read_glue_tsv(f, get_task("sst2"), allow_unlabeled=True)
