"""``amqs-report``: the Pareto report of an Optuna study, written into its folder.

    amqs-report results/studies/sst2-minilm-l6-default
    amqs-report results/studies/big --storage postgresql://user@host/db     # a study kept elsewhere
    amqs-report /tmp/big --storage journal:///shared/big.log --study big    # on a machine without the run folders
    amqs-report results/studies/quick-sst2-minilm-l6 --trial 4              # draw trial 4's bits

Writes ``pareto.csv`` (every trial: number, state, parameters, objective values, metrics, sizes,
``is_pareto``), ``pareto.md``, ``pareto.png`` (search-val and dev accuracy against encoder MB, the
front highlighted, fp32 and the uniform baselines of ``results/baselines.csv`` as reference points)
and ``bits_<n>.png`` (the bit allocation of the best search-val Pareto trial, or ``--trial``).
Safe to run while the study is still going. A trial file the folder lacks (this machine has only the storage URL)
is downloaded from the study's artifact store (``outer.artifacts``; ``--artifacts`` where this machine mounts it
elsewhere) into ``<study_dir>/runs/trial_<n>/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from amqs.outer.artifacts import fetch_trial, study_store
from amqs.quant import BitAssignment
from amqs.utils.cli import user_errors
from amqs.report.pareto import (
    chosen_trial,
    load_baselines,
    load_study,
    render_markdown,
    study_info,
    trials_table,
)
from amqs.report.plots import plot_bits, plot_pareto


def report(study_dir: Path, storage: Optional[str] = None, study_name: Optional[str] = None,
           trial: Optional[int] = None, baselines: Optional[Path] = None,
           artifacts: Optional[str] = None) -> list[Path]:
    """Write the report files into ``study_dir``; returns their paths.

    Example::

        report(Path("results/studies/sst2-bert-tiny-default"))
    """
    study_dir = Path(study_dir)
    study = load_study(study_dir, storage, study_name)
    study_dir.mkdir(parents=True, exist_ok=True)
    info = study_info(study_dir, study)
    df = trials_table(study, study_dir)
    written = [study_dir / "pareto.csv"]
    df.to_csv(written[0], index=False)
    # results/studies/<name> -> results/baselines.csv
    fp32 = df["fp32_encoder_bytes"].dropna() if "fp32_encoder_bytes" in df else []
    base = load_baselines(baselines or study_dir.parent.parent / "baselines.csv", info.get("task"),
                          float(fp32.iloc[0]) if len(fp32) else None)
    title = f"study {study.study_name}"
    written.append(plot_pareto(df, study_dir / "pareto.png", base, title=title))
    chosen = trial if trial is not None else chosen_trial(df)
    if chosen is not None:
        rows = df[df["number"] == chosen]
        if rows.empty or not isinstance(rows.iloc[0]["run_dir"], str):
            raise ValueError(f"trial {chosen} is not in study {study.study_name} or has no run folder")
        bits_json = study_dir / rows.iloc[0]["run_dir"] / "bits.json"
        store = None if bits_json.exists() else study_store(study, artifacts)
        if store is not None:  # this machine has the storage URL only: the copy in the artifact store
            fetch_trial(study, chosen, study_dir, store, files=["bits.json"])
        if not bits_json.exists():
            raise FileNotFoundError(f"{bits_json} not found: trial {chosen} did not finish its search")
        a = BitAssignment.from_json(bits_json)
        r = rows.iloc[0]
        sub = f"trial {chosen}" + (f": {r['encoder_bytes'] / 1e6:.3f} MB encoder, {r['compression']:.1f}x, "
                                   f"search-val {100 * r['search_val_accuracy']:.2f}%"
                                   if r["state"] == "COMPLETE" else f" ({r['state'].lower()})")
        written.append(plot_bits(a, study_dir / f"bits_{chosen}.png", title=f"Bits per subgroup, {sub}"))
    images = [p.name for p in written if p.suffix == ".png"]
    md = study_dir / "pareto.md"
    md.write_text(render_markdown(study, df, info, chosen, images, base))
    written.insert(1, md)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="amqs-report", description=__doc__.splitlines()[0])
    p.add_argument("study_dir", type=Path, help="results/studies/<name> (holds study.db and runs/)")
    p.add_argument("--storage", default=None, help="the study's storage URL when it is not <study_dir>/study.db")
    p.add_argument("--study", default=None, help="study name (default: from study.json)")
    p.add_argument("--trial", type=int, default=None, help="trial whose bits to draw (default: best search-val "
                                                           "accuracy on the front)")
    p.add_argument("--artifacts", default=None, help="the study's artifact store as this machine sees it (default: "
                                                     "the outer.artifacts the study recorded)")
    p.add_argument("--baselines", type=Path, default=None, help="baselines CSV (default: results/baselines.csv "
                                                                "two levels above the study folder)")
    args = p.parse_args(argv)
    with user_errors("amqs-report"):
        for path in report(args.study_dir, args.storage, args.study, args.trial, args.baselines, args.artifacts):
            print(path)


if __name__ == "__main__":
    main()
