"""Load an ``amqs-export`` folder and predict with ONNX Runtime (CPU).

An export folder holds ``model.onnx``, ``export.json`` (task, labels, maximum length, how it was
made), the HF ``config.json`` and tokenizer files, ``bits.json`` and ``metrics.json``.

Example::

    from amqs.runtime import ExportedModel
    m = ExportedModel("exports/sst2-default-16.2", threads=2)
    m.predict_logits(["a gripping, funny film"]).argmax(-1)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import datasets
import numpy as np

EXPORT_FILE = "export.json"
MODEL_FILE = "model.onnx"
FORMAT = "amqs-export"
FORMAT_VERSION = 1
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class ExportError(ValueError):
    """A corrupted or incompatible export folder; the message names the file."""


def session_options(threads: Optional[int] = None):
    """ORT CPU session options: all graph optimizations, ``threads`` intra-op threads (None: ORT's default)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    if threads:
        so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3
    return so


def load_session(model_file: Path, threads: Optional[int] = None):
    """An ORT CPU session of ``model_file``; a missing or unreadable file fails with its name."""
    import onnxruntime as ort

    model_file = Path(model_file)
    if not model_file.is_file():
        raise FileNotFoundError(f"{model_file}: ONNX model not found")
    try:
        return ort.InferenceSession(str(model_file), session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises several private exception types for a bad file
        raise ExportError(f"{model_file}: not a loadable ONNX model ({type(e).__name__}: {str(e)[:300]}); "
                          "re-export it with amqs-export") from e


def read_export_meta(path: Path) -> dict:
    meta_file = Path(path) / EXPORT_FILE
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{path}: no such export folder (make one with `amqs-export RUN_DIR --out {path}`)")
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file} not found: {path} is not an amqs export folder")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{meta_file}: corrupted ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExportError(f"{meta_file}: not an {FORMAT} file")
    if meta.get("version") != FORMAT_VERSION:
        raise ExportError(f"{meta_file}: format version {meta.get('version')} is not supported "
                          f"(this amqs reads version {FORMAT_VERSION})")
    for key in ("task", "num_labels", "max_length"):
        if key not in meta:
            raise ExportError(f"{meta_file}: missing key {key!r}")
    return meta


def export_label_names(path: Path, num_labels: int) -> tuple[str, ...]:
    """Label i's name from an export's ``config.json`` (``id2label``, which amqs-export always writes); ``LABEL_<i>``
    where it says nothing.

    Example::

        export_label_names(Path("outputs/exports/reviews"), 3)  # ("bad", "good", "ok")
    """
    file = Path(path) / "config.json"
    id2label = json.loads(file.read_text()).get("id2label", {}) if file.is_file() else {}
    return tuple(str(id2label.get(str(i), f"LABEL_{i}")) for i in range(num_labels))


class ExportedModel:
    """An exported classifier: tokenizer + ONNX Runtime session."""

    def __init__(self, path: str | Path, threads: Optional[int] = None) -> None:
        from transformers import AutoTokenizer

        from amqs.data.glue import TASKS, TaskSpec

        self.path = Path(path)
        self.meta = read_export_meta(self.path)
        self.label_names = export_label_names(self.path, int(self.meta["num_labels"]))
        # A GLUE task keeps its metrics (MRPC's f1); your own data's task is named by the export, labelled by it.
        self.task = TASKS.get(self.meta["task"]) or TaskSpec(name=self.meta["task"], label_names=self.label_names)
        self.max_length = int(self.meta["max_length"])
        self.session = load_session(self.path / MODEL_FILE, threads)
        names = tuple(i.name for i in self.session.get_inputs())
        if set(names) != set(INPUT_NAMES):
            raise ExportError(f"{self.path / MODEL_FILE}: inputs {names}, expected {INPUT_NAMES}")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        except Exception as e:
            raise ExportError(f"{self.path}: tokenizer files missing or corrupted ({e})") from e

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray,
            token_type_ids: Optional[np.ndarray] = None) -> np.ndarray:
        """Logits ``[batch, num_labels]`` for int64 ``[batch, length]`` inputs."""
        feed = {"input_ids": np.asarray(input_ids, np.int64), "attention_mask": np.asarray(attention_mask, np.int64),
                "token_type_ids": (np.zeros_like(input_ids, np.int64) if token_type_ids is None
                                   else np.asarray(token_type_ids, np.int64))}
        return self.session.run(["logits"], feed)[0]

    def predict_dataset(self, ds: datasets.Dataset, batch_size: int = 32) -> np.ndarray:
        """Logits for a dataset with ``text_a``/``text_b`` columns (as amqs.data loads GLUE)."""
        from amqs.data.loaders import make_loader

        loader = make_loader(ds, self.tokenizer, max_length=self.max_length, batch_size=batch_size, shuffle=False)
        return self.predict_loader(loader)

    def predict_loader(self, loader) -> np.ndarray:
        """Logits for the batches of an amqs.data loader (torch tensors, labels ignored; no ``token_type_ids`` for a
        tokenizer of a model without token types)."""
        types = lambda b: b["token_type_ids"].numpy() if "token_type_ids" in b else None  # noqa: E731
        out = [self.run(b["input_ids"].numpy(), b["attention_mask"].numpy(), types(b)) for b in loader]
        return np.concatenate(out) if out else np.zeros((0, int(self.meta["num_labels"])), np.float32)

    def predict_logits(self, text_a: Sequence[str], text_b: Optional[Sequence[str]] = None,
                       batch_size: int = 32) -> np.ndarray:
        """Logits for raw texts (pairs when ``text_b`` is given)."""
        ds = datasets.Dataset.from_dict({"text_a": list(text_a),
                                         "text_b": list(text_b) if text_b is not None else [None] * len(text_a),
                                         "label": [-1] * len(text_a)})
        return self.predict_dataset(ds, batch_size)
