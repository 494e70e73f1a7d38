"""``amqs-predict DIR --input FILE.tsv``: predict a GLUE-layout TSV with an exported model.

Writes ``index<TAB>prediction<TAB>logit_0<TAB>logit_1...`` (default: ``outputs/predictions/<export>/<FILE's folder>-<FILE stem>.tsv``
under the working directory, never beside the input)
and, when the file has labels, prints the task's metrics. Files without the label column
(GLUE's ``test.tsv`` layout) are accepted.
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


def predict_file(export_dir: Path, input_file: Path, output: Optional[Path] = None, *, batch_size: int = 32,
                 threads: Optional[int] = None) -> dict:
    from amqs.data.glue import read_glue_tsv
    from amqs.runtime import ExportedModel
    from amqs.train.metrics import METRICS

    model = ExportedModel(export_dir, threads=threads)
    ds = read_glue_tsv(Path(input_file), model.task, allow_unlabeled=True)
    logits = model.predict_dataset(ds, batch_size=batch_size)
    preds = logits.argmax(-1)
    output = Path(output) if output else default_output(export_dir, input_file)
    check_writable(output)
    with output.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["index", "prediction"] + [f"logit_{i}" for i in range(logits.shape[1])])
        for i, (p, row) in enumerate(zip(preds, logits)):
            w.writerow([i, int(p)] + [f"{v:.6g}" for v in row])
    labels = np.asarray(ds["label"])
    result: dict = {"examples": len(ds), "output": str(output)}
    if (labels >= 0).all():
        t_pred, t_lab = torch.from_numpy(preds), torch.from_numpy(labels)
        result.update({name: METRICS[name](t_pred, t_lab) for name in model.task.metrics})
    return result


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="amqs-predict", description=__doc__.split("\n\n")[0])
    p.add_argument("export_dir", type=Path, help="a folder written by amqs-export")
    p.add_argument("--input", type=Path, required=True, help="GLUE-layout TSV (with or without labels)")
    p.add_argument("--output", type=Path, default=None,
                   help="predictions TSV (default: outputs/predictions/<EXPORT>/<INPUT folder>-<INPUT stem>.tsv)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    with user_errors("amqs-predict"):
        result = predict_file(args.export_dir, args.input, args.output, batch_size=args.batch_size,
                              threads=args.threads)
    print(json.dumps(result), file=sys.stdout)


if __name__ == "__main__":
    main()
