"""The data of a run: GLUE SST-2 and MRPC (from the HF hub, or from a local folder in the GLUE TSV layout),
your own files (``data.train_file``, :mod:`amqs.data.files`) or any ``datasets`` dataset by name
(``data.dataset``, :mod:`amqs.data.named`).

Every split comes out with the same columns — ``text_a``, ``text_b`` (None for single-sentence
tasks) and ``label`` — whatever the source, so nothing downstream knows where data came from.

The *search-validation* split is a seeded fraction of train, carved out here once, used by the
architecture step and by model selection; the dev split is only ever evaluated.

Example::

    splits = load_glue(DataConfig(task="sst2", glue_dir="../shared/data/glue"))
    splits["train"], splits["search_val"], splits["dev"]
    task_spec(DataConfig(task="reviews", train_file="reviews.csv", text_column="review")).label_names
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import datasets

from amqs.config import DataConfig
from amqs.data.errors import DataError
from amqs.data.files import Columns, Texts, collect, features, label_vocabulary, read_texts, table_rows, to_dataset


@dataclass(frozen=True)
class TaskSpec:
    """A classification task: its label names (label i's name; their count is the classifier's), its metrics,
    and for a GLUE task how it is laid out in each source (empty for your own files)."""

    name: str
    label_names: tuple[str, ...]
    metrics: tuple[str, ...] = ("accuracy", "macro_f1")
    glue_folder: str = ""  # folder name in the GLUE TSV layout
    hub_config: str = ""  # config name of the "glue" dataset on the hub
    tsv_columns: tuple[str, ...] = ()  # header of the local TSV files
    tsv_text: tuple[str, ...] = ()  # text columns in the TSV (one or two)
    tsv_label: str = ""
    hub_text: tuple[str, ...] = ()

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec(
        name="sst2",
        glue_folder="SST-2",
        hub_config="sst2",
        tsv_columns=("sentence", "label"),
        tsv_text=("sentence",),
        tsv_label="label",
        hub_text=("sentence",),
        label_names=("negative", "positive"),
    ),
    "mrpc": TaskSpec(
        name="mrpc",
        glue_folder="MRPC",
        hub_config="mrpc",
        tsv_columns=("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        tsv_text=("#1 String", "#2 String"),
        tsv_label="Quality",
        hub_text=("sentence1", "sentence2"),
        label_names=("not_equivalent", "equivalent"),
        metrics=("accuracy", "f1", "macro_f1"),
    ),
}

_GLUE_LABELS = ("0", "1")  # the label column's values in GLUE's TSVs, in id order
_FEATURES = features(_GLUE_LABELS)


def get_task(name: str) -> TaskSpec:
    """Look a GLUE task up by name; an unknown name lists the known ones (and how to use your own files)."""
    try:
        return TASKS[name]
    except KeyError:
        raise DataError(f"unknown task {name!r} (data.task) and no data.train_file: known tasks {sorted(TASKS)}, "
                        "or your own files with data=files data.train_file=<CSV, TSV, JSON or JSONL file>, "
                        "or a datasets dataset with data=dataset data.dataset=<hub id or local folder>") from None


def _columns(cfg: Any) -> Columns:
    return Columns(text=cfg.text_column, label=cfg.label_column, pair=cfg.text_pair_column or None)


def _train_texts(cfg: Any) -> Texts:
    return read_texts(Path(os.path.expanduser(cfg.train_file)), _columns(cfg))


def _has_files(cfg: Any) -> bool:
    return bool(getattr(cfg, "train_file", None))  # (a config saved before the key existed has none)


def _has_dataset(cfg: Any) -> bool:
    if getattr(cfg, "dataset", None) and _has_files(cfg):
        raise DataError(f"data.dataset={cfg.dataset!r} and data.train_file={cfg.train_file!r}: set one of them")
    return bool(getattr(cfg, "dataset", None))


def task_spec(cfg: DataConfig) -> TaskSpec:
    """The task of a data config: a GLUE task by ``data.task``, or with ``data.train_file`` a task named
    ``data.task`` whose labels are the train file's (read once; :func:`amqs.data.files.label_vocabulary`).

    Example:
        >>> task_spec(DataConfig(task="mrpc")).num_labels
        2
    """
    if _has_dataset(cfg):
        from amqs.data import named

        return TaskSpec(name=cfg.task, label_names=named.class_names(cfg) or label_vocabulary(
            named.read_split(cfg, cfg.train_split, "train_split", _columns(cfg))))
    if not _has_files(cfg):
        return get_task(cfg.task)
    return TaskSpec(name=cfg.task, label_names=label_vocabulary(_train_texts(cfg)))


def read_glue_tsv(path: Path, task: TaskSpec, *, allow_unlabeled: bool = False) -> datasets.Dataset:
    """Read one GLUE TSV file, checking every row; a bad row fails with file and line number.

    With ``allow_unlabeled`` a file without the label column (GLUE's ``test.tsv`` layout, e.g.
    ``index<TAB>sentence``) is accepted and every label is -1.

    Example::

        dev = read_glue_tsv(Path("../shared/data/glue/SST-2/dev.tsv"), get_task("sst2"))
    """
    # GLUE TSVs are not quoted (MRPC's sentences hold bare quotes); the MRPC files may start with a byte-order mark.
    header, rows = table_rows(path, "\t", csv.QUOTE_NONE)
    unlabeled = (allow_unlabeled and task.tsv_label not in header and all(c in header for c in task.tsv_text))
    if tuple(header) != task.tsv_columns and not unlabeled:
        wanted = f"{list(task.tsv_columns)}" + (f" or at least {list(task.tsv_text)}" if allow_unlabeled else "")
        raise DataError(f"{path}:1: expected header {wanted}, got {header}")
    cols = Columns(text=task.tsv_text[0], label=task.tsv_label, pair=task.tsv_text[1] if len(task.tsv_text) > 1 else None)
    texts = collect(path, ((line, dict(zip(header, row))) for line, row in rows), cols, allow_unlabeled=unlabeled)
    for label, line in zip(texts.labels or (), texts.lines):
        if label not in _GLUE_LABELS:
            raise DataError(f"{path}:{line}: label must be 0 or 1, got {label!r}")
    return to_dataset(texts, _GLUE_LABELS)


HUB_HINT = ("set AMQS_GLUE_DIR (or data.glue_dir) to a local folder in the GLUE TSV layout "
            "(<dir>/SST-2/train.tsv ...; on the build machines ../shared/data/glue)")


def hub_offline() -> bool:
    """Whether HF_DATASETS_OFFLINE or HF_HUB_OFFLINE asks for cached copies only."""
    return any(os.environ.get(k, "") not in ("", "0") for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the HF hub answers a TCP connection within ``timeout`` seconds (datasets itself retries for ~30 s)."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_hub(task: TaskSpec) -> tuple[datasets.Dataset, datasets.Dataset]:
    if not hub_offline() and not hub_reachable():
        raise DataError(f"no data folder is set and the Hugging Face hub is unreachable from here: {HUB_HINT}, "
                        "or HF_DATASETS_OFFLINE=1 to use a cached copy")
    try:
        raw = datasets.load_dataset("glue", task.hub_config)
    except Exception as e:  # offline without a cached copy, a hub error ...
        raise DataError(f"could not load glue/{task.hub_config} from the Hugging Face hub "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:200]}): {HUB_HINT}") from e

    def convert(split: datasets.Dataset) -> datasets.Dataset:
        cols = task.hub_text
        return split.map(
            lambda ex: {
                "text_a": ex[cols[0]],
                "text_b": ex[cols[1]] if len(cols) > 1 else None,
                "label": ex["label"],
            },
            remove_columns=split.column_names,
            features=_FEATURES,
        )

    return convert(raw["train"]), convert(raw["validation"])


def _train_dev(train: Texts, dev: Optional[Texts], names: tuple[str, ...], cfg: DataConfig,
               known: str) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, dev) datasets of checked rows; without ``dev`` a seeded validation_fraction of train is dev
    (search_val is carved from the rest later)."""
    train_ds = to_dataset(train, names, known)
    if dev is None:
        return split_search_val(train_ds, cfg.validation_fraction, cfg.split_seed, setting="data.validation_fraction")
    return train_ds, to_dataset(dev, names, known)


def _load_files(cfg: DataConfig) -> tuple[datasets.Dataset, datasets.Dataset]:
    train = _train_texts(cfg)
    dev = read_texts(Path(os.path.expanduser(cfg.validation_file)), _columns(cfg)) if cfg.validation_file else None
    return _train_dev(train, dev, label_vocabulary(train), cfg, "the train file's labels")


def _load_named(cfg: DataConfig) -> tuple[datasets.Dataset, datasets.Dataset]:
    from amqs.data import named

    train = named.read_split(cfg, cfg.train_split, "train_split", _columns(cfg))
    dev = (named.read_split(cfg, cfg.validation_split, "validation_split", _columns(cfg))
           if cfg.validation_split else None)
    return _train_dev(train, dev, named.label_names(cfg, train), cfg, "the train split's labels")


def load_raw(cfg: DataConfig) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The task's (train, dev) splits from the configured source: your files (``data.train_file``, a
    validation file or a seeded slice of train as dev), a GLUE folder, or the hub.

    Example::

        train, dev = load_raw(DataConfig(task="sst2", glue_dir="../shared/data/glue"))
    """
    if _has_dataset(cfg):
        return _load_named(cfg)
    if _has_files(cfg):
        return _load_files(cfg)
    task = get_task(cfg.task)
    glue_dir = cfg.glue_dir
    if not glue_dir:
        return _load_hub(task)
    root = Path(os.path.expanduser(glue_dir))
    if not root.is_dir():
        raise DataError(f"data.glue_dir (or env AMQS_GLUE_DIR) = {glue_dir!r} is not a folder")
    folder = root / task.glue_folder
    missing = [f.name for f in (folder / "train.tsv", folder / "dev.tsv") if not f.is_file()]
    if missing:
        raise DataError(f"{folder} has no {' or '.join(missing)}: data.glue_dir (or env AMQS_GLUE_DIR) = {glue_dir!r} "
                        f"must hold {task.glue_folder}/train.tsv and {task.glue_folder}/dev.tsv (GLUE TSV layout)")
    return read_glue_tsv(folder / "train.tsv", task), read_glue_tsv(folder / "dev.tsv", task)


def split_search_val(train: datasets.Dataset, fraction: float, seed: int,
                     setting: str = "data.search_val_fraction") -> tuple[datasets.Dataset, datasets.Dataset]:
    """Carve a deterministic search-validation split out of train: (train_rest, search_val). ``setting`` names
    the fraction's key in a bad-fraction error (also used for ``data.validation_fraction``'s dev slice).

    Example::

        rest, search_val = split_search_val(train, 0.1, seed=0)
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"{setting} must be in (0, 1), got {fraction}")
    parts = train.train_test_split(test_size=fraction, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def _cap(ds: datasets.Dataset, n: Optional[int]) -> datasets.Dataset:
    # Split order is already random (seeded), so the first n rows are a random subset.
    return ds if n is None or n >= len(ds) else ds.select(range(n))


def load_glue(cfg: DataConfig) -> datasets.DatasetDict:
    """Load ``train``, ``search_val`` and ``dev`` for ``cfg.task``.

    ``train`` excludes ``search_val``; callers that want every labelled training row (a
    teacher) concatenate the two. The max_*_examples caps apply after splitting.
    """
    train, dev = load_raw(cfg)
    rest, search_val = split_search_val(train, cfg.search_val_fraction, cfg.split_seed)
    if cfg.max_dev_examples is not None:
        dev = dev.shuffle(seed=cfg.split_seed)
    return datasets.DatasetDict(
        train=_cap(rest, cfg.max_train_examples),
        search_val=_cap(search_val, cfg.max_search_val_examples),
        dev=_cap(dev, cfg.max_dev_examples),
    )
