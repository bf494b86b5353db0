"""Figure of a comparison: a[l,e] of the first run against each other run, log-log, SEs marked.

>>> fig = fig_compare(runs)           # runs: [RunSEs, ...] as given to `compare`
>>> png_bytes(fig), svg_bytes(fig)    # from superexperts.report.figures
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from ..identify.compare import RunSEs, common_values, jaccard, spearman
from .figures import OKABE_ITO, plain, png_bytes, style, svg_bytes

# (label, colour, marker) of an expert that is an SE in run A only, run B only, both.
SE_CLASSES = (("SE in {a} only", OKABE_ITO[0], "s"), ("SE in {b} only", OKABE_ITO[1], "^"),
              ("SE in both", OKABE_ITO[2], "o"))  # fmt: skip


def _scatter_panel(ax, a: RunSEs, b: RunSEs) -> None:
    keys, xa, xb = common_values(a, b)
    sa, sb = set(a.experts), set(b.experts)
    title = f"Spearman {spearman(xa, xb):.3f}, Jaccard of SEs {jaccard(sa, sb):.2f}"
    # Log axes need positive values: experts that saw no token (a = 0) sit at a floor below the rest.
    positive = np.concatenate([xa[xa > 0], xb[xb > 0]])
    floor = positive.min() / 2 if positive.size else 1.0
    unused = bool(((xa <= 0) | (xb <= 0)).any())
    xa, xb = np.maximum(xa, floor), np.maximum(xb, floor)
    label = "other experts" + (f" (a = 0 drawn at {floor:.2g})" if unused else "")
    ax.scatter(xa, xb, s=6, color="#999999", alpha=0.5, linewidths=0, label=label, rasterized=True)
    members = (sa - sb, sb - sa, sa & sb)
    for (label, color, marker), group in zip(SE_CLASSES, members):
        idx = [i for i, k in enumerate(keys) if k in group]
        if not idx:
            continue
        ax.scatter(xa[idx], xb[idx], s=60, color=color, marker=marker, edgecolors="black", linewidths=0.6,
                   label=plain(label.format(a=a.name, b=b.name)), zorder=3)  # fmt: skip
        for n, i in enumerate(sorted(idx, key=lambda i: -xa[i])):
            layer, expert = keys[i]
            name = f"L{layer} E{expert}" if isinstance(expert, int) else f"L{layer} {expert}"
            # SEs lie near the diagonal: alternate labels above-left / below-right of it.
            above = n % 2 == 0
            ax.annotate(name, (xa[i], xb[i]), xytext=(-7, 5) if above else (7, -12),
                        textcoords="offset points", ha="right" if above else "left", fontsize=9)  # fmt: skip
    low, high = min(xa.min(), xb.min()), max(xa.max(), xb.max())
    ax.plot([low, high], [low, high], ls="--", lw=1, color="black", alpha=0.6, label="equal")
    ax.set(xscale="log", yscale="log",
           xlabel=f"a[l,e] in {plain(a.name)}", ylabel=f"a[l,e] in {plain(b.name)}")  # fmt: skip
    ax.set_title(title)
    ax.legend(loc="upper left", frameon=False)


def fig_compare(runs: Sequence[RunSEs]) -> Figure:
    """One panel per run after the first: max |down_proj output| per expert, run 1 vs run k."""
    with style():
        others = runs[1:]
        fig = Figure(figsize=(6.2 * len(others), 5.6), layout="constrained")
        for ax, other in zip(np.atleast_1d(fig.subplots(1, len(others))), others):
            _scatter_panel(ax, runs[0], other)
        fig.suptitle("Same Super Experts? a[l,e] per expert, run against run")
    return fig


def compare_figure_files(runs: Sequence[RunSEs], stem: str = "compare_scatter") -> dict[str, bytes]:
    """{'compare_scatter.png': ..., 'compare_scatter.svg': ...} for `io.write_files`."""
    with style():
        fig = fig_compare(runs)
        return {f"{stem}.png": png_bytes(fig), f"{stem}.svg": svg_bytes(fig)}
