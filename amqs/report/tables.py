"""Render a results CSV as a Markdown table, with the commands that produced it.

    python -m amqs.report.tables results/baselines.csv --title "Uniform baselines" --note "..."

Numbers are shown as measured (accuracies as percentages with two decimals, bytes with thousands
separators); the ``command`` column moves below the table so the table stays readable.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import pandas as pd

PERCENT = ("accuracy", "f1")
HIDDEN = ("command", "config_hash")  # the command goes below the table; the hash stays in the CSV (row identity)


def _fmt(col: str, value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "not recorded" if col == "cpu" else "–"  # rows older than the provenance in metrics.json
    if isinstance(value, float) and any(p in col for p in PERCENT):
        return f"{100 * value:.2f}"
    if isinstance(value, (int,)) and "bytes" in col:
        return f"{value:,}"
    if isinstance(value, float) and value.is_integer() and "bytes" in col:
        return f"{int(value):,}"
    if isinstance(value, float) and value.is_integer() and col.endswith("_bits"):
        return str(int(value))  # a column with a missing value is float: 8.0 -> 8
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def to_markdown(df: pd.DataFrame, title: str, notes: Sequence[str] = ()) -> str:
    """A Markdown document: title, notes, the table (accuracy/F1 in %), then each row's command."""
    cols = [c for c in df.columns if c not in HIDDEN]
    lines = [f"# {title}", ""]
    lines += [*notes, ""] if notes else []
    lines.append("| " + " | ".join(c + (" (%)" if any(p in c for p in PERCENT) else "") for c in cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(c, row[c]) for c in cols) + " |")
    if "command" in df.columns:
        lines += ["", "Commands:", ""]
        lines += [f"- `{c}`" for c in df["command"].fillna("")]
    return "\n".join(lines) + "\n"


def select_rows(df: pd.DataFrame, where: Sequence[str]) -> pd.DataFrame:
    """Keep the rows matching every ``COLUMN=VALUE[,VALUE...]`` filter (values compared as text).

    Example:
        >>> df = pd.DataFrame({"task": ["sst2", "sst2", "mrpc"], "method": ["fp32", "q8bert", "fp32"]})
        >>> select_rows(df, ["task=sst2", "method=fp32,w8a8"])["method"].tolist()
        ['fp32']
        >>> select_rows(pd.DataFrame({"bits": [8.0, 4.0]}), ["bits=8"])["bits"].tolist()
        [8.0]
    """
    for cond in where:
        col, sep, values = cond.partition("=")
        if not sep or col not in df.columns:
            raise ValueError(f"--where {cond!r}: expected COLUMN=VALUE[,VALUE...] with COLUMN one of {list(df.columns)}")
        wanted = values.split(",")
        if pd.api.types.is_numeric_dtype(df[col]):  # 8 matches 8.0
            try:
                keep = df[col].isin([float(v) for v in wanted])
            except ValueError:
                raise ValueError(f"--where {cond!r}: {col} is numeric") from None
        else:
            keep = df[col].astype(str).isin(wanted)
        if not keep.any():
            raise ValueError(f"--where {cond!r} keeps no row; {col} has {sorted(map(str, df[col].unique()))}")
        df = df[keep]
    return df


def render_csv(csv_path: Path, md_path: Path | None = None, title: str = "", notes: Sequence[str] = (),
               where: Sequence[str] = ()) -> Path:
    """Write ``<csv>.md`` (or ``md_path``) next to a results CSV, optionally only some rows; returns its path."""
    df = select_rows(pd.read_csv(csv_path), where)
    md_path = md_path or csv_path.with_suffix(".md")
    md_path.write_text(to_markdown(df, title or csv_path.stem, notes))
    return md_path


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", type=Path)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--title", default="")
    p.add_argument("--note", action="append", default=[], help="a paragraph above the table (repeatable)")
    p.add_argument("--where", action="append", default=[], metavar="COLUMN=V1,V2",
                   help="only rows whose COLUMN is one of the values (repeatable: all must hold)")
    args = p.parse_args(argv)
    print(render_csv(args.csv, args.out, args.title, args.note, args.where))


if __name__ == "__main__":
    main()
