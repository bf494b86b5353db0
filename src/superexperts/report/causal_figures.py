"""The causal check as a figure: layers x candidates, each cell the drop of the activation in the
channel the candidate writes when it alone is ablated (prune_eval.json `causal.candidates`).

>>> fig = fig_causal([{"layer": 1, "expert": 68, "channel": 940, "causal_layers": [1, 2],
...                    "channel_drop": [0.0, 1.0, 0.6]}])
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .figures import MISSING, plain, style

MAX_ANNOTATED_CELLS = 600  # beyond this the numbers would not be readable


def _column(candidate: dict[str, Any], num_layers: int) -> np.ndarray:
    """Drop per layer; NaN above the candidate's own layer (an ablation cannot reach back) and where
    nothing was measured (a candidate with no effect on the windows)."""
    drops = candidate.get("channel_drop")
    column = np.full(num_layers, np.nan)
    if isinstance(drops, list):
        values = np.array([v if isinstance(v, (int, float)) else np.nan for v in drops], dtype=float)
        column[: len(values)] = values[:num_layers]
    own = candidate.get("layer")
    if isinstance(own, int):
        column[:own] = np.nan
    return column


def causal_grid(candidates: list[dict[str, Any]]) -> tuple[np.ndarray, list[str]]:
    """(layers x candidates drops clipped to [-1, 1], column labels 'L:E ch c')."""
    num_layers = max((len(c.get("channel_drop") or []) for c in candidates), default=0)
    grid = np.stack([_column(c, num_layers) for c in candidates], axis=1) if candidates else np.zeros((0, 0))
    labels = []
    for c in candidates:
        channel = c.get("channel")
        where = f"ch {channel}" if channel is not None else "no effect"
        labels.append(plain(f"{c.get('layer')}:{c.get('expert')}\n{where}"))
    return np.clip(grid, -1.0, 1.0), labels


def fig_causal(candidates: list[dict[str, Any]]) -> Figure:
    """Heatmap of per-layer drops (rows = layers, columns = candidates); causal layers boxed."""
    grid, labels = causal_grid(candidates)
    num_layers, count = grid.shape if grid.size else (0, len(candidates))
    with style():
        size = (max(7.0, 2.0 + 0.9 * count), max(3.0, 1.4 + 0.32 * num_layers))
        fig = Figure(figsize=size, layout="constrained")
        ax = fig.subplots()
        ax.set_facecolor(MISSING)  # NaN cells: layers before the candidate, or nothing measured
        image = ax.imshow(
            np.ma.masked_invalid(grid), cmap="PuOr", vmin=-1, vmax=1, aspect="auto", interpolation="nearest"
        )
        for col, c in enumerate(candidates):
            for layer in c.get("causal_layers") or []:
                if isinstance(layer, int) and 0 <= layer < num_layers:
                    ax.add_patch(
                        Rectangle((col - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2)
                    )
        if grid.size and grid.size <= MAX_ANNOTATED_CELLS:
            for (layer, col), value in np.ndenumerate(grid):
                if np.isfinite(value):
                    ax.text(
                        col,
                        layer,
                        f"{value:.0%}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if abs(value) > 0.6 else "black",
                    )
        ax.set_xticks(range(count), labels)
        ax.set_yticks(range(num_layers))
        ax.set_ylabel("layer (output of)")
        ax.set_xlabel("ablated candidate (layer:expert) and the channel it writes")
        ax.set_title("Drop of each candidate's activation per layer (boxed: causal)")
        fig.colorbar(image, ax=ax, label="drop of the peak |h| in its channel")
    return fig
