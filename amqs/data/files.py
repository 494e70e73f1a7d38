"""Text-classification data from your own files: CSV, TSV, JSON (a list of objects) or JSONL.

The format is picked by the extension. Labels may be strings or integers, any number of classes:
they are mapped to ids in the sorted order of the train file's distinct labels (integers by value,
then strings), and that order is the model's ``id2label``. Every split comes out with GLUE's
columns (``text_a``, ``text_b``, ``label``), so nothing downstream knows where data came from.
A malformed row fails with ``file:line: what is wrong``.

Example::

    cols = Columns(text="review", label="stars")
    texts = read_texts(Path("reviews.csv"), cols)         # text_a, text_b, raw labels, line numbers
    names = label_vocabulary(texts)                        # ("bad", "good", "ok")
    ds = to_dataset(texts, names)                          # label ids 0..2
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import datasets

from amqs.data.errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl"}


@dataclass(frozen=True)
class Columns:
    """Which fields of a record hold the text, the optional second text of a pair, and the label."""

    text: str
    label: str = "label"
    pair: Optional[str] = None


@dataclass(frozen=True)
class Texts:
    """One file's rows: texts, raw labels (strings; None without a label column) and their line numbers."""

    path: Path
    text_a: tuple[str, ...]
    text_b: tuple[Optional[str], ...]
    labels: Optional[tuple[str, ...]]
    lines: tuple[int, ...]


def file_format(path: Path) -> str:
    """``csv`` | ``tsv`` | ``json`` | ``jsonl`` from the extension; another fails naming the known ones.

    Example:
        >>> file_format(Path("train.JSONL"))
        'jsonl'
    """
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown file type {Path(path).suffix!r}; use one of {sorted(FORMATS)}")
    return fmt


def table_rows(path: Path, delimiter: str, quoting: int = csv.QUOTE_MINIMAL) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """``(header, [(line, row), ...])`` of a delimited file, each row's field count checked against the header's;
    blank lines are skipped and a UTF-8 byte-order mark is dropped.

    Example::

        header, rows = table_rows(Path("dev.tsv"), "\\t", csv.QUOTE_NONE)  # GLUE's TSVs are not quoted
    """
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    name = {"\t": "tab", ",": "comma"}.get(delimiter, repr(delimiter))
    rows = []
    with Path(path).open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}:1: empty file (expected a header line)")
        for row in reader:
            if not row:  # a trailing empty line is harmless
                continue
            if len(row) != len(header):
                hint = ("; TSV fields are read unquoted: a file with quoted fields is read as CSV (.csv)"
                        if quoting == csv.QUOTE_NONE else "")
                raise DataError(f"{path}:{reader.line_num}: expected {len(header)} {name}-separated fields, "
                                f"got {len(row)}{hint}")
            rows.append((reader.line_num, row))
    return header, rows


def _json_records(path: Path) -> Iterator[tuple[int, Any]]:
    # A list of objects: each element is decoded on its own so an error names the element's line.
    text = Path(path).read_text(encoding="utf-8-sig")
    decoder = json.JSONDecoder()
    ws = " \t\r\n"
    pos = len(text) - len(text.lstrip(ws))
    if not text.startswith("[", pos):
        raise DataError(f"{path}:{text.count(chr(10), 0, pos) + 1}: expected a JSON list of objects")
    pos += 1
    while True:
        while pos < len(text) and text[pos] in ws + ",":
            pos += 1
        line = text.count("\n", 0, pos) + 1
        if pos >= len(text):
            raise DataError(f"{path}:{line}: unterminated JSON list")
        if text[pos] == "]":
            return
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: bad JSON ({e.msg})") from None
        yield line, obj


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    with Path(path).open(encoding="utf-8-sig") as f:
        for line, raw in enumerate(f, 1):
            if raw.strip():
                try:
                    yield line, json.loads(raw)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{line}: bad JSON ({e.msg})") from None


def records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, record)`` of every row of a CSV, TSV, JSON or JSONL file, a record being ``{column: value}``.

    Example::

        next(records(Path("reviews.jsonl")))  # (1, {"review": "A fine film.", "stars": "good"})
    """
    fmt = file_format(path)
    if fmt in ("csv", "tsv"):
        # TSV fields are unquoted (IANA TSV, as GLUE's files: MRPC's sentences hold bare quotes); CSV's may be quoted
        header, rows = table_rows(path, *((",", csv.QUOTE_MINIMAL) if fmt == "csv" else ("\t", csv.QUOTE_NONE)))
        for line, row in rows:
            yield line, dict(zip(header, row))
        return
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    for line, obj in (_json_records(path) if fmt == "json" else _jsonl_records(path)):
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{line}: expected a JSON object, got {type(obj).__name__}")
        yield line, obj


def _field(path: Path, line: int, rec: dict[str, Any], column: str, what: str) -> str:
    if column not in rec:
        raise DataError(f"{path}:{line}: no {what} column {column!r} (the row has {sorted(rec)})")
    value = rec[column]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(f"{path}:{line}: {what} {column!r} must be a string or an integer, got {value!r}")
    value = str(value).strip()
    if not value:
        raise DataError(f"{path}:{line}: empty {what} field {column!r}")
    return value


def text_row(path: Path, line: int, rec: dict[str, Any], cols: Columns,
             labelled: bool) -> tuple[str, Optional[str], Optional[str]]:
    """``(text_a, text_b, raw label)`` of one record, checked: a missing column, an empty text or label, or a
    value that is not a string or an integer fails with ``path:line``.

    Example:
        >>> text_row(Path("r.csv"), 2, {"review": " Fine. ", "stars": 3}, Columns("review", "stars"), True)
        ('Fine.', None, '3')
    """
    a = _field(path, line, rec, cols.text, "text")
    b = _field(path, line, rec, cols.pair, "text") if cols.pair else None
    return a, b, _field(path, line, rec, cols.label, "label") if labelled else None


def read_texts(path: Path, cols: Columns, *, allow_unlabeled: bool = False) -> Texts:
    """Every row of ``path`` (CSV, TSV, JSON list or JSONL), checked with :func:`text_row`.

    With ``allow_unlabeled``, a file whose first record has no label column is read without labels.

    Example::

        t = read_texts(Path("reviews.csv"), Columns(text="review", label="stars"))
        t.text_a[0], t.labels[0]   # ("A fine film.", "good")
    """
    path = Path(path)
    st = path.stat() if path.is_file() else None
    return _read_cached(path, cols, allow_unlabeled, st and (st.st_mtime_ns, st.st_size))


@lru_cache(maxsize=8)  # the task's labels and its splits read the same train file once
def _read_cached(path: Path, cols: Columns, allow_unlabeled: bool, _stamp: Any) -> Texts:
    return collect(path, records(path), cols, allow_unlabeled=allow_unlabeled)


def collect(path: Path, recs: Iterable[tuple[int, dict[str, Any]]], cols: Columns, *,
            allow_unlabeled: bool = False) -> Texts:
    """The checked rows (:func:`text_row`) of ``(line, record)`` pairs read from ``path``.

    Example:
        >>> collect(Path("d.csv"), [(2, {"t": "hi", "y": "ok"})], Columns("t", "y")).labels
        ('ok',)
    """
    a: list[str] = []
    b: list[Optional[str]] = []
    labels: list[str] = []
    lines: list[int] = []
    labelled = True
    for line, rec in recs:
        if not lines:
            labelled = not allow_unlabeled or cols.label in rec
        x, y, label = text_row(path, line, rec, cols, labelled)
        a.append(x), b.append(y), lines.append(line)
        if label is not None:
            labels.append(label)
    if not lines:
        raise DataError(f"{path}: no data rows")
    return Texts(path, tuple(a), tuple(b), tuple(labels) if labelled else None, tuple(lines))


def label_vocabulary(texts: Texts) -> tuple[str, ...]:
    """The distinct labels of a (train) file in id order: integers by value, then strings sorted.

    Example:
        >>> t = Texts(Path("t.csv"), ("a",) * 4, (None,) * 4, ("ok", "10", "2", "ok"), (2, 3, 4, 5))
        >>> label_vocabulary(t)
        ('2', '10', 'ok')
    """
    if texts.labels is None:
        raise DataError(f"{texts.path}: no label column (data.label_column)")

    def key(label: str) -> tuple[int, int, str]:
        integer = label.lstrip("-").isdigit()
        return (0, int(label), "") if integer else (1, 0, label)

    return tuple(sorted(set(texts.labels), key=key))


def label_ids(texts: Texts, names: Sequence[str], known: str = "the train file's labels") -> list[int]:
    """Each row's label id in ``names`` (-1 for every row of an unlabelled file); a label not in ``names`` fails
    with ``path:line``.

    Example:
        >>> label_ids(Texts(Path("d.csv"), ("a", "b"), (None, None), ("ok", "bad"), (2, 3)), ("bad", "ok"))
        [1, 0]
    """
    if texts.labels is None:
        return [-1] * len(texts.lines)
    ids = {n: i for i, n in enumerate(names)}
    for label, line in zip(texts.labels, texts.lines):
        if label not in ids:
            raise DataError(f"{texts.path}:{line}: label {label!r} is not one of {known} {list(names)}")
    return [ids[label] for label in texts.labels]


def to_dataset(texts: Texts, names: Sequence[str], known: str = "the train file's labels") -> datasets.Dataset:
    """The rows as a dataset with GLUE's columns (``text_a``, ``text_b``, ``label`` ids into ``names``).

    Example:
        >>> to_dataset(Texts(Path("d.csv"), ("a",), (None,), ("ok",), (2,)), ("bad", "ok"))[0]
        {'text_a': 'a', 'text_b': None, 'label': 1}
    """
    return datasets.Dataset.from_dict({"text_a": list(texts.text_a), "text_b": list(texts.text_b),
                                       "label": label_ids(texts, names, known)}, features=features(names))


def features(names: Sequence[str]) -> datasets.Features:
    """GLUE's columns, the label a ClassLabel of ``names``."""
    return datasets.Features({"text_a": datasets.Value("string"), "text_b": datasets.Value("string"),
                              "label": datasets.ClassLabel(names=list(names))})
