"""Figures of quant_eval.json and audit.json, from their plain dicts.

>>> fig = fig_protection(doc["conditions"], doc["summary"])   # perplexity + massive retention
>>> fig = fig_audit(audit["layers"])                          # massive activation + sink, before/after
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .figures import OKABE_ITO, plain, style

RANDOM_GROUP = "protect-random"  # quant_eval.RANDOM_GROUP (not imported: the report reads files only)


def floats(values: Any) -> np.ndarray:
    """Floats, NaN for missing or non-numeric entries (JSON may hold 'nan', 'inf' or null)."""
    out = []
    for v in values or []:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return np.array(out, dtype=np.float64)


def _is_random(c: dict[str, Any]) -> bool:
    return str(c.get("name", "")).startswith(RANDOM_GROUP + "-")


def _perplexity_panel(ax: Axes, conditions: list[dict[str, Any]]) -> None:
    """Perplexity change against the original per condition (quantization moves it by little, so a
    bar from zero would hide it); the random-protection seeds as one bar (their mean), a min-max
    whisker and a dot per seed. Each label gives the perplexity and the change."""
    fixed = [c for c in conditions if not _is_random(c) and c.get("name") != "original"]
    original = next((floats([c.get("perplexity")])[0] for c in conditions if c.get("name") == "original"), np.nan)
    randoms = floats([c.get("perplexity") for c in conditions if _is_random(c)])
    names = [plain(c.get("name", "")) for c in fixed]
    values = list(floats([c.get("perplexity") for c in fixed]))
    group = f"{RANDOM_GROUP} ({randoms.size} seeds)"
    if randoms.size:  # after protect-super, as in the table
        at = next((i + 1 for i, c in enumerate(fixed) if c.get("name") == "protect-super"), len(fixed))
        names.insert(at, group)
        values.insert(at, float(np.nanmean(randoms)))
    change = (np.array(values) / original - 1) * 100  # percent
    rows = np.arange(len(names))
    ax.barh(rows, np.nan_to_num(change, nan=0.0, posinf=0.0), color=[OKABE_ITO[(i + 1) % 6] for i in rows])
    if randoms.size:
        y, seeds = names.index(group), (randoms / original - 1) * 100
        ax.errorbar([change[y]], [y], xerr=[[change[y] - np.nanmin(seeds)], [np.nanmax(seeds) - change[y]]],
                    color="black", capsize=4, linewidth=1.5)  # fmt: skip
        ax.plot(seeds, np.full(seeds.size, y), "o", color="black", markersize=3)
    labels = [f"{n}\n{v:.5g} ({d:+.2g}%)" if np.isfinite(d) else f"{n}\nn/a" for n, v, d in zip(names, values, change)]
    ax.set_yticks(rows, labels)
    ax.invert_yaxis()
    ax.axvline(0, color="#7f7f7f", linewidth=1)
    ax.set_xlabel(f"perplexity change vs the original's {original:.5g} (%; lower is better)")
    ax.set_title("Perplexity per condition")
    ax.margins(x=0.1)


def _retention_panel(ax: Axes, conditions: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Massive-activation retention per layer: a line per condition, the random seeds as a band."""
    styles = ("-", "--", ":", "-.")
    for i, c in enumerate(c for c in conditions if not _is_random(c) and c.get("name") != "original"):
        values = floats(c.get("massive_retention"))
        ax.plot(range(len(values)), values, marker="o", markersize=4, linewidth=2, linestyle=styles[i % 4],
                color=OKABE_ITO[(i + 1) % len(OKABE_ITO)], label=plain(c.get("name", "")))  # fmt: skip
    band = (summary.get(RANDOM_GROUP) or {}).get("massive_retention") if isinstance(summary, dict) else None
    if isinstance(band, dict):
        low, high, mean = (floats(band.get(k)) for k in ("min", "max", "mean"))
        layers = np.arange(len(mean))
        ax.fill_between(layers, low, high, color="#7f7f7f", alpha=0.3, label=f"{RANDOM_GROUP} (min - max)")
        ax.plot(layers, mean, color="#4d4d4d", linestyle="--", linewidth=1.5, label=f"{RANDOM_GROUP} (mean)")
    ax.axhline(1.0, color="#7f7f7f", linewidth=1)
    drawn = np.concatenate([floats(c.get("massive_retention")) for c in conditions] or [np.ones(1)])
    drawn = drawn[np.isfinite(drawn) & (drawn > 0)]
    if drawn.size and drawn.min() < 0.1:  # a collapsed massive activation: show orders of magnitude
        ax.set_yscale("log")
    ax.set_xlabel("layer")
    ax.set_ylabel("top-1 |hidden| / original")
    ax.set_title("Massive activation retained per layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False)


def fig_protection(conditions: list[dict[str, Any]], summary: dict[str, Any]) -> Figure:
    """Left: perplexity per quantization condition (random protection: mean, min-max, seeds).
    Right: massive-activation retention per layer against the original."""
    with style():
        fig = Figure(figsize=(13, 0.9 + 0.5 * max(len(conditions), 8)), layout="constrained")
        ppl_ax, ma_ax = fig.subplots(1, 2)
        _perplexity_panel(ppl_ax, conditions)
        _retention_panel(ma_ax, conditions, summary)
    return fig


def fig_audit(layers: list[dict[str, Any]]) -> Figure:
    """Left: the massive activation (top-1 |hidden|) per layer, original vs compressed (log scale).
    Right: attention on the first token per layer, original vs compressed."""
    index = [int(r.get("layer", i)) for i, r in enumerate(layers)]
    with style():
        fig = Figure(figsize=(12, 4.6), layout="constrained")
        ma_ax, sink_ax = fig.subplots(1, 2)
        for ax, key in ((ma_ax, "massive"), (sink_ax, "sink_mass")):
            for j, (when, label) in enumerate((("before", "original"), ("after", "compressed"))):
                ax.plot(index, floats([r.get(f"{key}_{when}") for r in layers]), marker="o", markersize=4,
                        linewidth=2, linestyle=("-", "--")[j], color=OKABE_ITO[j], label=label)  # fmt: skip
            ax.set_xlabel("layer")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.3)
            ax.legend(frameon=False)
        ma_ax.set_yscale("log")
        ma_ax.set_ylabel("top-1 |hidden|")
        ma_ax.set_title("Massive activation per layer")
        sink_ax.set_ylim(-0.05, 1.05)
        sink_ax.set_ylabel("mean attention to token 0")
        sink_ax.set_title("Attention sink per layer")
    return fig
