"""The figure of "Expert-level vs atom-level protection", from `levels_section.protection_levels`' table.

>>> fig = fig_levels(levels)   # perplexity against the share of expert weights kept
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from .figures import OKABE_ITO, plain, style

MARKERS = {"nothing": "o", "Super Experts": "s", "super atoms": "D", "random experts": "^"}
COLOURS = {"prune_eval": OKABE_ITO[1], "quant_eval": OKABE_ITO[0]}


def fig_levels(levels: pd.DataFrame) -> Figure:
    """Perplexity (log scale when it spans more than x3: pruning an SE multiplies it) against the share of expert weights kept;
    marker by what is protected, colour by file, each point labelled with its condition."""
    with style():
        fig = Figure(figsize=(7.0, 4.4))
        ax = fig.subplots()
        shown = levels.dropna(subset=["kept", "perplexity"])
        for (file, protects), group in shown.groupby(["file", "protects"], sort=False):
            ax.scatter(group["kept"] * 100, group["perplexity"], marker=MARKERS.get(protects, "o"),
                       color=COLOURS.get(file, OKABE_ITO[6]), label=plain(f"{file}: protects {protects}"))  # fmt: skip
            for r in group.itertuples():
                ax.annotate(plain(r.condition), (r.kept * 100, r.perplexity), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ppl = shown["perplexity"]
        if len(shown) and ppl.min() > 0 and ppl.max() / ppl.min() > 3:  # a pruned SE: x5 next to x1.01
            ax.set_yscale("log")
        ax.set_xlabel("expert weights kept (not zeroed, not quantized), %")
        ax.set_ylabel("perplexity")
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
    return fig
