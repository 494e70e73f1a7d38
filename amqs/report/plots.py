"""Pictures of a study: the accuracy/size front (``pareto.png``) and a bit allocation (``bits_<n>.png``).

Drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch), so importing
this module changes nothing for a notebook that uses another backend.

Example::

    plot_pareto(trials_table(study), Path("pareto.png"), baselines=load_baselines(...))
    plot_bits(BitAssignment.from_json("runs/trial_0003/bits.json"), Path("bits_3.png"))
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from amqs.models.family import canonical_name
from amqs.quant import BitAssignment

PRUNED_COLOR = "#d62728"  # red: nothing like the blues of the kept bit-widths
BITS_COLORS = {1: "#deebf7", 2: "#9ecae1", 4: "#4292c6", 8: "#08306b", 32: "#252525"}
# BERT's Linears by their name inside a layer -> short labels (other families through their BERT spelling).
SHORT = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
         "attention.output.dense": "attn out", "intermediate.dense": "FFN in", "output.dense": "FFN out"}
_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.(.+)$")


def save_figure(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


PARETO_PANELS = (("search_val_accuracy", "search-validation", "encoder_bytes"), ("dev_accuracy", "dev", "encoder_bytes"),
                 ("dev_accuracy", "dev", "total_bytes"))  # (score, its label, size axis) of each panel


def plot_pareto(df: pd.DataFrame, path: Path, baselines: Optional[pd.DataFrame] = None, title: str = "") -> Path:
    """Search-val and dev accuracy (%) against encoder size (MB), and dev accuracy against the whole model's size;
    the study's front (its own objectives) highlighted.

    The uniform baselines (dev accuracy only) appear as reference points in the dev panels.

    Example:
        >>> plot_pareto(trials_table(study), Path("results/studies/s/pareto.png"))   # doctest: +SKIP
    """
    fig = Figure(figsize=(17, 4.8))
    done = df[df["state"] == "COMPLETE"] if not df.empty else df
    for i, (col, label, size) in enumerate(PARETO_PANELS):
        ax = fig.add_subplot(1, len(PARETO_PANELS), i + 1)
        ax.set_xlabel(f"{size.split('_')[0]} size (MB, 10^6 bytes)")
        ax.set_ylabel(f"{label} accuracy (%)")
        ax.set_title(f"{label} accuracy" + (" (selection)" if i == 0 else " (reported only)"))
        ax.grid(alpha=0.3)
        if done.empty or size not in done:
            ax.text(0.5, 0.5, "no complete trial yet", ha="center", va="center", transform=ax.transAxes)
            continue
        xs = _pareto_panel(ax, done, col, size)
        if col == "dev_accuracy" and baselines is not None and size in baselines:
            xs += _baseline_points(ax, baselines, size)
        if min(xs) > 0 and max(xs) / min(xs) > 8:  # fp32 next to a 15x model: log scale keeps both readable
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def _pareto_panel(ax: Any, done: pd.DataFrame, col: str, size: str) -> list[float]:
    """The trials of one panel: dominated in grey, the front as a line, undecided searches crossed; their x."""
    x, y = done[size] / 1e6, 100 * done[col].astype(float)
    on = done["is_pareto"].astype(bool)
    if (~on).any():
        ax.scatter(x[~on], y[~on], color="0.6", s=25, label="trial (dominated)")
    front = done[on].sort_values(size)
    fx, fy = front[size] / 1e6, 100 * front[col].astype(float)
    ax.plot(fx, fy, "-o", color="#ff7f0e", ms=6, label="Pareto front (search-val)")
    for n, xx, yy in zip(front["number"], fx, fy):
        ax.annotate(str(n), (xx, yy), textcoords="offset points", xytext=(4, 4), fontsize=8)
    undecided = done["undecided"].map(lambda v: v is True or v == 1.0) if "undecided" in done else None
    if undecided is not None and undecided.any():
        ax.scatter(x[undecided], y[undecided], marker="x", color="#d62728", s=70, zorder=4,
                   label="undecided search (amqs.search.diagnostics)")
    return list(x)


def _baseline_points(ax: Any, baselines: pd.DataFrame, size: str) -> list[float]:
    """The uniform baselines' dev accuracy at their ``size``; their x."""
    xs = []
    for _, b in baselines.iterrows():
        bx, by = b[size] / 1e6, 100 * float(b["dev_accuracy"])
        fp32 = b["method"] == "fp32"
        ax.scatter([bx], [by], marker="*" if fp32 else "s", s=90 if fp32 else 40,
                   color="black" if fp32 else "#2ca02c", zorder=3,
                   label="fp32" if fp32 else f"{b['method']} (uniform baseline)")
        ax.annotate(str(b["method"]), (bx, by), textcoords="offset points", xytext=(4, -10), fontsize=8)
        xs.append(bx)
    return xs


def encoder_rows(assignment: BitAssignment) -> list[tuple[str, tuple[int, ...]]]:
    """(label, bits per subgroup) of every encoder Linear, by layer then in model order.

    Example:
        >>> encoder_rows(a)[0]                    # doctest: +SKIP
        ('L0 query', (8, 8, 4, 0, ...))
    """
    rows = []
    for order, (name, mb) in enumerate(assignment.modules.items()):
        m = _LAYER.search(canonical_name(name))
        if mb.kind == "linear" and m:
            rows.append((int(m[1]), order, f"L{m[1]} {SHORT.get(m[2], m[2])}", mb.bits))
    return [(label, bits) for _, _, label, bits in sorted(rows)]


def plot_bits(assignment: BitAssignment, path: Path, title: str = "") -> Path:
    """Heat map of the chosen bits: one row per (layer, matrix), subgroups (output rows) left to right.

    Rows with fewer subgroups are stretched so that columns line up by output-row position.
    Pruned subgroups (0 bits) are red; kept ones are shades of blue, darker = more bits.

    Example:
        >>> plot_bits(BitAssignment.from_json("bits.json"), Path("bits_3.png"))   # doctest: +SKIP
    """
    rows = encoder_rows(assignment)
    if not rows:
        raise ValueError("the assignment has no encoder Linear (names like '...layer.<i>.<module>')")
    width = max(len(bits) for _, bits in rows)
    grid = np.array([[bits[j * len(bits) // width] for j in range(width)] for _, bits in rows])
    values = sorted(set(grid.flat))
    colors = [PRUNED_COLOR if v == 0 else BITS_COLORS.get(v, "#6baed6") for v in values]
    index = np.searchsorted(values, grid)  # colour by position in the sorted list of values present
    fig = Figure(figsize=(10, 1.6 + 0.22 * len(rows)))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(index, aspect="auto", interpolation="nearest", cmap=ListedColormap(colors),
              norm=BoundaryNorm(np.arange(len(values) + 1) - 0.5, len(values)))
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=7)
    layers = [label.split()[0] for label, _ in rows]
    for r in range(1, len(rows)):
        if layers[r] != layers[r - 1]:
            ax.axhline(r - 0.5, color="white", lw=1.5)
    ax.set_xticks([])
    ax.set_xlabel(f"subgroups of output rows, left to right (up to {width} per matrix)")
    ax.set_ylabel("layer, matrix")
    handles = [Patch(color=c, label="pruned (0 bits)" if v == 0 else f"{v} bits") for v, c in zip(values, colors)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="chosen bits")
    ax.set_title(title or "bits per subgroup")
    return save_figure(fig, path)


__all__ = ["encoder_rows", "plot_bits", "plot_pareto", "save_figure"]
