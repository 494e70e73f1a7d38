"""amqs.data.named and data=dataset: any `datasets` dataset by name, here a local folder of parquet files
(what datasets.load_dataset reads without the hub), with a ClassLabel column and with string labels."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from amqs.config import DataConfig
from amqs.data import DataError, load_glue, load_raw, task_spec
from amqs.utils.run import config_hash
from tests.conftest import compose_cfg

NAMES = ["good", "bad", "ok"]  # not sorted: a ClassLabel's order is kept
TRAIN = {"review": ["a fine film", "dull", "fine, i guess", "superb", "awful", "so-so", "great", "bad"],
         "stars": [0, 1, 2, 0, 1, 2, 0, 1]}
DEV = {"review": ["lovely", "boring", "meh"], "stars": [0, 1, 2]}


def _folder(root: Path, label: datasets.ClassLabel | datasets.Value, convert=lambda s: s) -> Path:
    feats = datasets.Features({"review": datasets.Value("string"), "stars": label})
    for split, rows in (("train", TRAIN), ("validation", DEV)):
        datasets.Dataset.from_dict({**rows, "stars": [convert(s) for s in rows["stars"]]},
                                   features=feats).to_parquet(str(root / f"{split}.parquet"))
    return root


def _cfg(folder: Path, **kw) -> DataConfig:
    return DataConfig(**{**dict(task="reviews", dataset=str(folder), text_column="review", label_column="stars",
                                glue_dir=None, search_val_fraction=0.25), **kw})


def test_a_classlabel_keeps_its_ids_and_names(tmp_path: Path) -> None:
    folder = _folder(tmp_path, datasets.ClassLabel(names=NAMES))
    assert task_spec(_cfg(folder)).label_names == tuple(NAMES)
    train, dev = load_raw(_cfg(folder))
    assert list(train["label"]) == TRAIN["stars"] and list(dev["label"]) == DEV["stars"]
    assert list(train["text_a"]) == TRAIN["review"] and set(train["text_b"]) == {None}
    assert train.features["label"].names == NAMES


def test_string_labels_map_like_files(tmp_path: Path) -> None:
    folder = _folder(tmp_path, datasets.Value("string"), convert=lambda s: NAMES[s])
    assert task_spec(_cfg(folder)).label_names == ("bad", "good", "ok")  # sorted, as for files
    _, dev = load_raw(_cfg(folder))
    assert list(dev["label"]) == [1, 0, 2]


def test_without_a_validation_split_dev_is_carved_from_train(tmp_path: Path) -> None:
    folder = _folder(tmp_path, datasets.ClassLabel(names=NAMES))
    splits = load_glue(_cfg(folder, validation_split=None, validation_fraction=0.25))
    assert (len(splits["train"]), len(splits["search_val"]), len(splits["dev"])) == (4, 2, 2)
    seen = [t for s in ("train", "search_val", "dev") for t in splits[s]["text_a"]]
    assert sorted(seen) == sorted(TRAIN["review"])


def test_bad_names_fail_with_one_line(tmp_path: Path) -> None:
    folder = _folder(tmp_path, datasets.ClassLabel(names=NAMES))
    with pytest.raises(DataError, match=r"data.validation_split='test': data.dataset=.* has the splits "
                                        r"\['train', 'validation'\]"):
        load_raw(_cfg(folder, validation_split="test"))
    with pytest.raises(DataError, match=r"\[train\]:1: no text column 'text'"):
        load_raw(_cfg(folder, text_column="text"))
    with pytest.raises(DataError, match=r"data.dataset=.* and data.train_file=.*: set one of them"):
        load_raw(_cfg(folder, train_file="x.csv"))
    with pytest.raises(DataError, match=r"data.dataset='no_such_dataset_here'"):  # unreachable hub or no such id
        load_raw(_cfg(Path("no_such_dataset_here")))


def test_the_dataset_preset_composes_and_hashes(tmp_path: Path) -> None:
    folder = _folder(tmp_path, datasets.ClassLabel(names=NAMES))
    cfg = compose_cfg("finetune", ["data=dataset", f"data.dataset={folder}", "data.text_column=review",
                                   "data.label_column=stars"])
    assert cfg.data.task == "dataset" and task_spec(cfg.data).label_names == tuple(NAMES)
    other = compose_cfg("finetune", ["data=dataset", f"data.dataset={folder}", "data.text_column=review",
                                     "data.label_column=stars", "data.validation_split=null"])
    assert config_hash(cfg) != config_hash(other)
    with pytest.raises(DataError, match=r"unknown task 'dataset' .* data=dataset data.dataset=<hub id"):
        task_spec(compose_cfg("finetune", ["data=dataset"]).data)
