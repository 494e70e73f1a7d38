"""``amqs-predict DIR --input FILE``: predict a file of texts with an exported model.

FILE is a GLUE-layout TSV (an export of a GLUE task, no column options), or any CSV, TSV, JSON list or JSONL
file whose columns ``--text-column`` (and ``--text-pair-column``, ``--label-column``) name, as ``data=files``
reads them. Writes ``index<TAB>prediction<TAB>label<TAB>prob_<name>...<TAB>logit_0...`` (the label id, its name,
the softmax probability of each label, the logits; default: ``outputs/predictions/<export>/<FILE's folder>-<FILE
stem>.tsv`` under the working directory, never beside the input) and, when the file has labels, prints the
task's metrics. Files without the label column (GLUE's ``test.tsv`` layout) are accepted.

Example::

    amqs-predict outputs/exports/reviews --input new.csv --text-column review
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from amqs.utils.cli import user_errors
from amqs.utils.run import check_writable


def default_output(export_dir: Path, input_file: Path) -> Path:
    """``outputs/predictions/<export>/<input folder>-<input stem>.tsv`` under the working directory: inputs (a
    shared data folder, an export) are never written to, and two models or two tasks' ``dev.tsv`` never collide."""
    input_file = Path(input_file).resolve()
    return Path("outputs") / "predictions" / Path(export_dir).resolve().name / f"{input_file.parent.name}-{input_file.stem}.tsv"


def read_input(model, input_file: Path, columns=None):
    """The rows of ``input_file`` as a dataset (labels: ids of the model's label names, -1 without labels):
    GLUE's TSV layout for a GLUE export without ``columns``, else ``columns`` (default: ``text`` and ``label``).

    Example::

        ds = read_input(ExportedModel("outputs/exports/reviews"), Path("new.csv"), Columns("review", "stars"))
    """
    from amqs.data.files import Columns, read_texts, to_dataset
    from amqs.data.glue import TASKS, read_glue_tsv

    input_file = Path(input_file)
    if columns is None and model.task.name in TASKS and input_file.suffix.lower() == ".tsv":
        return read_glue_tsv(input_file, model.task, allow_unlabeled=True)
    texts = read_texts(input_file, columns or Columns(text="text"), allow_unlabeled=True)
    return to_dataset(texts, model.label_names, known="the model's labels")


def write_predictions(output: Path, logits: np.ndarray, names: Sequence[str]) -> None:
    """The predictions TSV: index, predicted id, its name, each label's probability, the logits."""
    probs = torch.softmax(torch.from_numpy(logits).double(), dim=-1).numpy()
    with output.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["index", "prediction", "label"] + [f"prob_{n}" for n in names]
                   + [f"logit_{i}" for i in range(logits.shape[1])])
        for i, (row, p) in enumerate(zip(logits, probs)):
            k = int(row.argmax())
            w.writerow([i, k, names[k]] + [f"{v:.6g}" for v in p] + [f"{v:.6g}" for v in row])


def predict_file(export_dir: Path, input_file: Path, output: Optional[Path] = None, *, batch_size: int = 32,
                 threads: Optional[int] = None, columns=None) -> dict:
    """Predict ``input_file`` (:func:`read_input`) with the export in ``export_dir``; write the predictions TSV;
    return ``{"examples", "output"}`` and, for a labelled file, the task's metrics.

    Example::

        predict_file(Path("outputs/exports/reviews"), Path("dev.csv"), columns=Columns("review", "stars"))
    """
    from amqs.runtime import ExportedModel
    from amqs.train.metrics import METRICS

    model = ExportedModel(export_dir, threads=threads)
    ds = read_input(model, input_file, columns)
    logits = model.predict_dataset(ds, batch_size=batch_size)
    output = Path(output) if output else default_output(export_dir, input_file)
    check_writable(output)
    write_predictions(output, logits, model.label_names)
    labels = np.asarray(ds["label"])
    result: dict = {"examples": len(ds), "output": str(output)}
    if (labels >= 0).all():
        t_pred, t_lab = torch.from_numpy(logits.argmax(-1)), torch.from_numpy(labels)
        result.update({name: METRICS[name](t_pred, t_lab) for name in model.task.metrics})
    return result


def _columns(args: argparse.Namespace):
    from amqs.data.files import Columns

    if args.text_column is None:
        if args.text_pair_column or args.label_column:
            raise ValueError("--text-pair-column and --label-column need --text-column")
        return None
    return Columns(text=args.text_column, label=args.label_column or "label", pair=args.text_pair_column)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="amqs-predict", description=__doc__.split("\n\n")[0])
    p.add_argument("export_dir", type=Path, help="a folder written by amqs-export")
    p.add_argument("--input", type=Path, required=True,
                   help="CSV, TSV, JSON or JSONL with or without labels (a GLUE-layout TSV for a GLUE export)")
    p.add_argument("--text-column", default=None, help="the column of the text (as data.text_column)")
    p.add_argument("--text-pair-column", default=None, help="the column of a pair's second text")
    p.add_argument("--label-column", default=None, help="the label column, when the file has one (default: label)")
    p.add_argument("--output", type=Path, default=None,
                   help="predictions TSV (default: outputs/predictions/<EXPORT>/<INPUT folder>-<INPUT stem>.tsv)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    with user_errors("amqs-predict"):
        result = predict_file(args.export_dir, args.input, args.output, batch_size=args.batch_size,
                              threads=args.threads, columns=_columns(args))
    print(json.dumps(result), file=sys.stdout)


if __name__ == "__main__":
    main()
