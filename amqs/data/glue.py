"""GLUE SST-2 and MRPC: from the HF hub, or from a local folder in the GLUE TSV layout.

Every split comes out with the same columns — ``text_a``, ``text_b`` (None for single-sentence
tasks) and ``label`` — whatever the source, so nothing downstream knows where data came from.

The *search-validation* split is a seeded fraction of train, carved out here once, used by the
architecture step and by model selection; the dev split is only ever evaluated.

Example::

    splits = load_glue(DataConfig(task="sst2", glue_dir="../shared/data/glue"))
    splits["train"], splits["search_val"], splits["dev"]
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import datasets

from amqs.config import DataConfig


class DataError(ValueError):
    """Missing or malformed data; the message names the file, line or setting to fix."""


@dataclass(frozen=True)
class TaskSpec:
    """How one GLUE task is laid out in each source."""

    name: str
    glue_folder: str  # folder name in the GLUE TSV layout
    hub_config: str  # config name of the "glue" dataset on the hub
    tsv_columns: tuple[str, ...]  # header of the local TSV files
    tsv_text: tuple[str, ...]  # text columns in the TSV (one or two)
    tsv_label: str
    hub_text: tuple[str, ...]
    label_names: tuple[str, ...] = ()  # label i's name (GLUE's), for the configs others read (an export's)
    num_labels: int = 2
    metrics: tuple[str, ...] = ("accuracy",)


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
        metrics=("accuracy", "f1"),
    ),
}

_FEATURES = datasets.Features(
    {
        "text_a": datasets.Value("string"),
        "text_b": datasets.Value("string"),
        "label": datasets.ClassLabel(num_classes=2),
    }
)


def get_task(name: str) -> TaskSpec:
    """Look a task up by name; an unknown name lists the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise DataError(f"unknown task {name!r} (data.task); known tasks: {sorted(TASKS)}") from None


def read_glue_tsv(path: Path, task: TaskSpec, *, allow_unlabeled: bool = False) -> datasets.Dataset:
    """Read one GLUE TSV file, checking every row; a bad row fails with file and line number.

    With ``allow_unlabeled`` a file without the label column (GLUE's ``test.tsv`` layout, e.g.
    ``index<TAB>sentence``) is accepted and every label is -1.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    text_a: list[str] = []
    text_b: list[Optional[str]] = []
    labels: list[int] = []
    # GLUE TSVs are not quoted; the MRPC files may start with a UTF-8 byte-order mark.
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        unlabeled = (allow_unlabeled and header is not None and task.tsv_label not in header
                     and all(c in header for c in task.tsv_text))
        if header is None or (tuple(header) != task.tsv_columns and not unlabeled):
            wanted = f"{list(task.tsv_columns)}" + (f" or at least {list(task.tsv_text)}" if allow_unlabeled else "")
            raise DataError(f"{path}:1: expected header {wanted}, got {header}")
        text_idx = [header.index(c) for c in task.tsv_text]
        label_idx = None if unlabeled else header.index(task.tsv_label)
        for row in reader:
            line = reader.line_num
            if not row:  # a trailing empty line is harmless
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{line}: expected {len(header)} tab-separated fields, got {len(row)}")
            label = "-1" if label_idx is None else row[label_idx].strip()
            if label_idx is not None and label not in ("0", "1"):
                raise DataError(f"{path}:{line}: label must be 0 or 1, got {label!r}")
            texts = [row[i].strip() for i in text_idx]
            if any(not t for t in texts):
                raise DataError(f"{path}:{line}: empty text field")
            text_a.append(texts[0])
            text_b.append(texts[1] if len(texts) > 1 else None)
            labels.append(int(label))
    if not labels:
        raise DataError(f"{path}: no data rows")
    return datasets.Dataset.from_dict({"text_a": text_a, "text_b": text_b, "label": labels}, features=_FEATURES)


HUB_HINT = ("set AMQS_GLUE_DIR (or data.glue_dir) to a local folder in the GLUE TSV layout "
            "(<dir>/SST-2/train.tsv ...; on the build machines ../shared/data/glue)")


def _hub_reachable(timeout: float = 3.0) -> bool:
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
    offline = os.environ.get("HF_DATASETS_OFFLINE", "") not in ("", "0") or \
        os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if not offline and not _hub_reachable():
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


def load_raw(cfg: DataConfig) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The task's official (train, dev) splits from the configured source."""
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


def split_search_val(train: datasets.Dataset, fraction: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Carve a deterministic search-validation split out of train: (train_rest, search_val)."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"data.search_val_fraction must be in (0, 1), got {fraction}")
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
