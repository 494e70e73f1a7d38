"""Any ``datasets`` dataset by name (``data.dataset``): a hub id (``imdb``, ``ag_news``, ``glue`` with
``data.dataset_config=sst2``) or a local folder of data files that ``datasets.load_dataset`` reads (train.parquet,
validation.csv, ...), with the same column options as your own files (:mod:`amqs.data.files`).

Labels: a ``ClassLabel`` column keeps the dataset's ids and names (``ag_news``: World, Sports, ...); any other
label column is mapped as your files' labels are (sorted distinct values). Rows go through the same checks as
file rows (an empty text names ``<dataset>[<split>]:<row>``, row 1 being the split's first).

Example::

    amqs-search data=dataset data.dataset=ag_news data.text_column=text data.validation_split=test
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Optional

import datasets

from amqs.data.errors import DataError
from amqs.data.files import Columns, Texts, collect, label_vocabulary


def _is_local(name: str) -> bool:
    return Path(os.path.expanduser(name)).exists()


@functools.lru_cache(maxsize=4)
def _load(name: str, config: Optional[str]) -> datasets.DatasetDict:
    from amqs.data.glue import HUB_HINT, hub_offline, hub_reachable

    local = _is_local(name)
    if not local and not hub_offline() and not hub_reachable():
        raise DataError(f"data.dataset={name!r} is not a local folder and the Hugging Face hub is unreachable from "
                        f"here: use a local folder of data files, data=files, or HF_DATASETS_OFFLINE=1 for a cached "
                        f"copy ({HUB_HINT})")
    try:
        ds = datasets.load_dataset(os.path.expanduser(name) if local else name, config or None)
    except Exception as e:  # no such dataset, a missing config, offline without a cached copy ...
        raise DataError(f"could not load data.dataset={name!r}"
                        f"{f' (data.dataset_config={config!r})' if config else ''}: "
                        f"{type(e).__name__}: {str(e).splitlines()[0][:240]}") from e
    if not isinstance(ds, datasets.DatasetDict):
        raise DataError(f"data.dataset={name!r} gave one split, not named splits")
    return ds


def _split(cfg: Any, split: str, key: str) -> datasets.Dataset:
    ds = _load(cfg.dataset, cfg.dataset_config)
    if split not in ds:
        raise DataError(f"data.{key}={split!r}: data.dataset={cfg.dataset!r} has the splits {sorted(ds)}")
    return ds[split]


def class_names(cfg: Any) -> Optional[tuple[str, ...]]:
    """The label column's ``ClassLabel`` names of the train split (None for any other label type)."""
    feature = _split(cfg, cfg.train_split, "train_split").features.get(cfg.label_column)
    return tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def read_split(cfg: Any, split: str, key: str, cols: Columns) -> Texts:
    """One split's rows, checked as file rows are; ``ClassLabel`` ids become their names."""
    ds = _split(cfg, split, key)
    names = class_names(cfg)

    def rows():
        for i, rec in enumerate(ds, start=1):
            label = rec.get(cols.label)
            if names is not None and isinstance(label, int) and 0 <= label < len(names):
                rec = {**rec, cols.label: names[label]}
            yield i, rec

    return collect(Path(f"{cfg.dataset}[{split}]"), rows(), cols)


def label_names(cfg: Any, train: Texts) -> tuple[str, ...]:
    """The task's label names in id order: the ClassLabel's, else the train split's sorted distinct labels."""
    return class_names(cfg) or label_vocabulary(train)
