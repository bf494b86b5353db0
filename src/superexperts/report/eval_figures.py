"""Figures of the optional evaluation files: perplexity per pruning condition, attention sinks.

Inputs are the `conditions` lists of prune_eval.json and sinks.json, read as plain dicts.

>>> fig = fig_perplexity([{"name": "original", "perplexity": 8.7}, {"name": "prune SEs", "perplexity": 59.9}])
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .figures import OKABE_ITO, plain, style


def _number(value: Any) -> float:
    """A float, or NaN for missing / non-numeric values (JSON may hold 'nan' or null)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def fig_perplexity(conditions: list[dict[str, Any]]) -> Figure:
    """Bar chart of perplexity per condition; log x when the values span a decade or more. An
    infinite perplexity (a collapsed model) is drawn past the largest finite bar and labelled inf."""
    names = [plain(c.get("name", f"condition {i}")) for i, c in enumerate(conditions)]
    values = np.array([_number(c.get("perplexity")) for c in conditions])
    finite = values[np.isfinite(values) & (values > 0)]
    cap = float(finite.max()) * 1.5 if finite.size else 1.0
    widths = np.nan_to_num(np.where(np.isposinf(values), cap, values), nan=0.0)
    with style():
        fig = Figure(figsize=(10, 0.9 + 0.5 * max(len(names), 3)), layout="constrained")
        ax = fig.subplots()
        rows = np.arange(len(names))
        ax.barh(rows, widths, color=[OKABE_ITO[i % 6] for i in rows])
        ax.set_yticks(rows, names)
        ax.invert_yaxis()  # first condition on top, as in the table
        for y, v, w in zip(rows, values, widths):
            ax.text(w, y, f" {v:.4g}" if np.isfinite(v) or np.isposinf(v) else " n/a", va="center")
        if finite.size and finite.max() / finite.min() >= 10:
            ax.set_xscale("log")
        ax.set_xlabel("perplexity (lower is better)" + ("  (log scale)" if ax.get_xscale() == "log" else ""))
        ax.set_title("Perplexity per condition")
        ax.margins(x=0.15)
    return fig


def fig_sinks(conditions: list[dict[str, Any]], note: str | None = None) -> Figure:
    """Left: attention mass on the sink token per layer, one line per condition. Right: the sink
    decay rate D_sink per layer (paper Eq. 7) for conditions that have it; with `note` (why D_sink
    is not meaningful on this input) the right panel says so instead of drawing the values."""
    with style():
        fig = Figure(figsize=(12, 4.8), layout="constrained")
        mass_ax, decay_ax = fig.subplots(1, 2)
        for i, c in enumerate(conditions):
            name = plain(c.get("name", f"condition {i}"))
            # Conditions often coincide (a control equal to the original): dashes keep both visible.
            look = {"color": OKABE_ITO[i % len(OKABE_ITO)], "linestyle": ("-", "--", ":", "-.")[i % 4],
                    "marker": "o", "markersize": 4, "linewidth": 2, "label": name}  # fmt: skip
            mass = [_number(v) for v in c.get("sink_mass") or []]
            if mass:
                mass_ax.plot(range(len(mass)), mass, **look)
            decay = [_number(v) for v in c.get("d_sink") or []]
            if decay and not note:
                decay_ax.plot(range(len(decay)), decay, **look)
        mass_ax.set_title("Attention mass on the first token")
        mass_ax.set_ylabel("mean attention to token 0")
        decay_ax.set_title("Sink decay rate D_sink (1 = sink gone)")
        decay_ax.set_ylabel("D_sink")
        if note:
            decay_ax.set_title("Sink decay rate D_sink: not meaningful here", color="#8a4b00")
            decay_ax.text(0.5, 0.5, "\n".join(textwrap.wrap(plain(note), 45)), transform=decay_ax.transAxes,
                          ha="center", va="center", bbox={"facecolor": "#fff3cd", "edgecolor": "#b8860b"})
        mass_ax.set_ylim(-0.05, 1.05)  # a probability mass
        decay_ax.axhline(1.0, color="#7f7f7f", linewidth=1, linestyle="--")
        decay_ax.axhline(0.0, color="#7f7f7f", linewidth=1)
        for ax in (mass_ax, decay_ax):
            ax.set_xlabel("layer")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(frameon=False)
    return fig
