"""Layer-wise ablation of the chain SE -> massive activation -> sink (the paper's Fig. 3/4 and Eq. 7).

Prune the Super Experts of one layer at a time, then all of them, and plot for each condition
the max |hidden| per layer (the "rises" of the massive activation) with the sink mass per layer
underneath: the rises disappear step by step and the sink collapses with them.

    >>> conditions = layerwise_conditions([(1, 68), (2, 92), (3, 82)])
    >>> list(conditions)
    ['super-layer-1', 'super-layer-2', 'super-layer-3', 'super']
    >>> fig = plot_chain(measure_sinks(model, ids, conditions))
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from matplotlib.figure import Figure

from ...models.experts import Expert
from .measure import SinkResult


def layerwise_conditions(experts: Sequence[Expert], name: str = "super") -> dict[str, list[Expert]]:
    """One condition per layer holding experts (only that layer's experts), then all of them."""
    layers = sorted({layer for layer, _ in experts})
    conditions = {f"{name}-layer-{layer}": [e for e in experts if e[0] == layer] for layer in layers}
    if len(layers) == 1:
        conditions = {}
    return conditions | {name: list(experts)}


def _style(index: int, name: str) -> dict:
    """Conditions often coincide (a control leaves the sink intact): dashes keep every line visible."""
    if name == "original":
        return {"linewidth": 3, "color": "black", "alpha": 0.6}
    dashes = ["--", ":", "-.", (0, (5, 1, 1, 1))]
    return {"linewidth": 1.8, "linestyle": dashes[index % len(dashes)]}


def plot_chain(result: SinkResult, names: Sequence[str] | None = None) -> Figure:
    """Max |hidden| per layer (log scale) on top, sink mass per layer below, one line per condition."""
    chosen = [c for c in result.conditions if names is None or c.name in names]
    fig = Figure(figsize=(7.5, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    fig.subplots_adjust(left=0.11, right=0.97, top=0.94, bottom=0.09, hspace=0.2)
    for i, c in enumerate(chosen):
        layers = range(len(c.max_hidden))
        style = _style(i, c.name)
        top.plot(layers, c.max_hidden, marker="o", label=c.name, **style)
        bottom.plot(layers, c.sink_mass, marker="o", label=c.name, **style)
    top.set_yscale("log")
    top.set_ylabel("max |hidden| after layer")
    top.set_title("massive activation per layer, by pruned Super Experts")
    top.legend(fontsize=7)
    bottom.set_ylabel("attention on sink tokens")
    bottom.set_xlabel("layer")
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_title(f"sink mass ({'first token' if result.sink_keys == [0] else f'keys {result.sink_keys}'}), "
                     "mean over heads and queries t > 0", fontsize=9)
    return fig


def plot_d_sink(result: SinkResult, note: str | None = None) -> Figure:
    """D_sink per layer for every ablated condition (paper Eq. 7; 1 = sink gone, 0 = unchanged).
    `note`: why the values are not meaningful on this input, written across the plot."""
    fig = Figure(figsize=(7.5, 3.5))
    ax = fig.subplots()
    fig.subplots_adjust(left=0.11, right=0.97, top=0.9, bottom=0.15)
    for i, c in enumerate(result.conditions):
        if c.d_sink is not None:
            ax.plot(range(len(c.d_sink)), c.d_sink, marker="o", label=c.name, **_style(i, c.name))
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel("D_sink")
    ax.set_title("attention sink decay rate vs the original model")
    ax.legend(fontsize=7)
    if note:
        ax.set_title("attention sink decay rate: NOT MEANINGFUL on this input", color="#8a4b00")
        ax.text(0.5, 0.5, "\n".join(textwrap.wrap(note, 70)), transform=ax.transAxes, ha="center",
                va="center", fontsize=9, bbox={"facecolor": "#fff3cd", "edgecolor": "#b8860b"})  # fmt: skip
    return fig
