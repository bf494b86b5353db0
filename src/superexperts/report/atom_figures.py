"""The figure of "Inside each Super Expert": each SE's output split over its atoms.

>>> fig = fig_super_atoms(panels)   # panels: [(title, shares by atom, super atoms)], from atom_section
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .figures import OKABE_ITO, plain, style

SHOWN = 12  # atoms drawn per SE: the largest shares; the rest are summed into one bar


def _bars(shares: np.ndarray, shown: int) -> tuple[list[str], np.ndarray]:
    """(labels, values): the `shown` largest shares by atom index, then the rest summed into one bar."""
    order = np.argsort(-shares, kind="stable")
    top = order[:shown]
    labels = [f"atom {int(k)}" for k in top]
    values = list(shares[top])
    rest = order[shown:]
    if rest.size:
        labels.append(f"{rest.size} others")
        values.append(float(shares[rest].sum()))
    return labels, np.array(values)


def fig_super_atoms(panels: list[tuple[str, np.ndarray, list[int]]], *, shown: int = SHOWN) -> Figure:
    """One horizontal bar chart per SE: each atom's share a[t*,k] w_k[c*] / output, largest first; the
    super atoms (the fewest carrying 90%) in colour, the others grey."""
    with style():
        fig = Figure(figsize=(6.5, 0.3 * (shown + 4) * len(panels) + 0.6))
        axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
        for ax, (title, shares, picked) in zip(axes, panels):
            labels, values = _bars(shares, shown)
            chosen = {f"atom {k}" for k in picked}
            colours = [OKABE_ITO[1] if label in chosen else "#9a9a9a" for label in labels]
            rows = np.arange(len(labels))
            ax.barh(rows, values * 100, color=colours)
            for y, v in zip(rows, values):
                if abs(v) >= 0.01:  # label the bars that are visible
                    ax.text(v * 100, y, f" {v:.1%} ", va="center", ha="left" if v >= 0 else "right", fontsize=9)
            ax.set_yticks(rows, labels)
            ax.invert_yaxis()
            ax.axvline(0, color="black", linewidth=0.8)
            ax.set_xlabel("share of the output at (t*, c*), %")
            carry = "1 atom carries" if len(picked) == 1 else f"{len(picked)} atoms carry"
            ax.set_title(plain(f"{title}: {carry} 90%"), loc="left")
        fig.tight_layout()
    return fig
