"""Figures of a profile: pure functions (tables, verdict) -> matplotlib Figure, plus savers.

The four figures follow the paper: a layer x expert heatmap of a[l,e] (its Fig. 5), per-expert
lines across layers (Fig. 3), the massive activation across layers (Fig. 4) and the distribution
of all a[l,e] against the two thresholds of Eq. 6. No pyplot: each function builds a
`matplotlib.figure.Figure` directly, so nothing touches global state and any machine can render.

>>> fig = fig_heatmap(prof.expert_stats, verdict)
>>> save_figure(fig, "run/figures/heatmap")  # heatmap.png and heatmap.svg
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colors, patheffects
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from ..identify.rules import Verdict

# Okabe & Ito (2008): distinguishable with every common colour-vision deficiency.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
HEATMAP_CMAP = "viridis"
MISSING = "#d9d9d9"  # experts that saw no token, dense layers
STYLE = {
    "font.size": 11, "axes.titlesize": 13, "axes.labelsize": 12, "legend.fontsize": 10,
    "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.spines.top": False, "axes.spines.right": False,
    "figure.dpi": 100, "savefig.bbox": "tight",
}  # fmt: skip
# Outline that keeps a marker visible on any background colour (black core, white halo).
HALO = [patheffects.withStroke(linewidth=4, foreground="white")]


@contextmanager
def style() -> Iterator[None]:
    """The report's matplotlib settings, for figures built inside the block only."""
    with matplotlib.rc_context(STYLE):
        yield


def plain(text: object) -> str:
    """Text from data drawn literally: matplotlib would read `$...$` as math."""
    return str(text).replace("$", r"\$")


def expert_name(layer: int, kind: str, expert: int | str) -> str:
    """'L1 E68', 'L2 shared', 'L0 dense'."""
    return f"L{int(layer)} E{int(expert)}" if kind == "routed" else f"L{int(layer)} {kind}"


def _positive(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values) & (values > 0)]


def _log_norm(values: np.ndarray) -> colors.LogNorm:
    pos = _positive(values)
    if pos.size == 0:
        return colors.LogNorm(1e-3, 1.0)
    low, high = float(pos.min()), float(pos.max())
    return colors.LogNorm(min(low, high / 10), high)


def _se_rows(verdict: Verdict | None) -> pd.DataFrame:
    if verdict is None or verdict.super_experts.empty:
        return pd.DataFrame(columns=["layer", "expert", "kind", "max_abs_output", "channel"])
    return verdict.super_experts


def _layer_ticks(ax, layers: list[int], dense: set[int]) -> None:
    ax.set_yticks(range(len(layers)))
    labels = [f"{layer} dense" if layer in dense else str(layer) for layer in layers]
    if len(layers) > 32:  # label every k-th row so labels never overlap
        step = -(-len(layers) // 24)
        labels = [lab if i % step == 0 or layers[i] in dense else "" for i, lab in enumerate(labels)]
    ax.set_yticklabels(labels)


def _box(ax, x: float, y: float, label: str) -> None:
    ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2,
                           path_effects=HALO, zorder=3))  # fmt: skip
    ax.annotate(
        label,
        (x + 0.5, y),
        xytext=(8, 0),
        textcoords="offset points",
        va="center",
        fontsize=10,
        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "black", "lw": 0.8},
        zorder=4,
    )


def expert_grid(expert_stats: pd.DataFrame) -> tuple[list[int], np.ndarray, np.ndarray, set[int]]:
    """(layers, routed a[l,e] as (layers, experts), shared a[l] as (layers, 1), dense layers); NaN
    where there is no expert or it saw no token (a = 0)."""
    layers = sorted(int(x) for x in expert_stats["layer"].unique())
    row = {layer: i for i, layer in enumerate(layers)}
    routed = expert_stats[expert_stats["kind"] == "routed"]
    shared = expert_stats[expert_stats["kind"] == "shared"]
    dense = {int(x) for x in expert_stats.loc[expert_stats["kind"] == "dense", "layer"]}
    num_experts = int(routed["expert"].max()) + 1 if not routed.empty else 1
    grid = np.full((len(layers), num_experts), np.nan)
    grid[routed["layer"].map(row).to_numpy(), routed["expert"].to_numpy(dtype=int)] = routed["max_abs_output"]
    shared_col = np.full((len(layers), 1), np.nan)
    shared_col[shared["layer"].map(row).to_numpy(), 0] = shared["max_abs_output"]
    grid[grid <= 0] = np.nan
    shared_col[shared_col <= 0] = np.nan
    return layers, grid, shared_col, dense


def fig_heatmap(expert_stats: pd.DataFrame, verdict: Verdict | None = None) -> Figure:
    """Layers x experts heatmap of max |down_proj output| (log colour); SEs boxed, shared
    experts in their own column, dense layers hatched grey."""
    layers, grid, shared_col, dense = expert_grid(expert_stats)
    row = {layer: i for i, layer in enumerate(layers)}
    has_shared = bool((expert_stats["kind"] == "shared").any())
    num_experts = grid.shape[1]
    norm = _log_norm(np.concatenate([grid.ravel(), shared_col.ravel()]))
    cmap = matplotlib.colormaps[HEATMAP_CMAP].with_extremes(bad=MISSING)

    with style():
        height = float(np.clip(1.6 + 0.28 * len(layers), 3.8, 13))
        fig = Figure(figsize=(11.5, height), layout="constrained")
        ratios = [max(num_experts, 8), max(num_experts / 14, 1)] if has_shared else [1]
        grid_spec = {"width_ratios": ratios}
        axes = fig.subplots(1, len(ratios), sharey=True, gridspec_kw=grid_spec, squeeze=False)[0]
        ax = axes[0]
        image = ax.imshow(grid, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_xlabel("expert index")
        ax.set_ylabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(num_experts, 24)))
        _layer_ticks(ax, layers, dense)
        if has_shared:
            axes[1].imshow(shared_col, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
            axes[1].set_xticks([0], ["shared"])
        for a in axes:
            for layer in dense:
                a.add_patch(Rectangle((-0.5, row[layer] - 0.5), a.get_xlim()[1] + 0.5, 1, facecolor=MISSING,
                                      hatch="///", edgecolor="#8c8c8c", linewidth=0, zorder=2))  # fmt: skip
        for r in _se_rows(verdict).itertuples():
            target = axes[1] if r.kind == "shared" and len(axes) > 1 else ax
            _box(target, 0 if r.kind == "shared" else int(r.expert), row[int(r.layer)],
                 expert_name(r.layer, r.kind, r.expert))  # fmt: skip
        _mark_judged_layers(ax, verdict, layers)
        fig.colorbar(image, ax=list(axes), label="max |down_proj output|  (log scale)", pad=0.01,
                     fraction=0.04, aspect=30)  # fmt: skip
        fig.suptitle("Largest output of each expert, a[l,e]  (boxed: Super Experts; grey: no token / dense)")
    return fig


def _mark_judged_layers(ax, verdict: Verdict | None, layers: list[int]) -> None:
    """A dashed line under the last layer the criterion judged (reference: layers < 0.75 L)."""
    judged = (verdict.criterion.get("layers_judged") if verdict is not None else None) or []
    below = [i for i, layer in enumerate(layers) if layer > max(judged, default=layers[-1])]
    if judged and below:
        ax.axhline(below[0] - 0.5, color="white", linestyle="--", linewidth=1.5)
        ax.text(0.99, below[0] - 0.5, "layers below: not judged ", transform=ax.get_yaxis_transform(),
                ha="right", va="bottom", color="white", fontsize=9, fontweight="bold",
                path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])  # fmt: skip


def _tracked_experts(expert_stats: pd.DataFrame, verdict: Verdict | None, top: int) -> list[tuple[str, int]]:
    """(kind, expert index) of every SE, then of up to `top` best other candidates by a[l,e], as
    long as the palette has distinct colours left for them."""
    pool = verdict.candidates if verdict is not None and not verdict.candidates.empty else expert_stats
    pool = pool[pool["kind"] != "dense"].sort_values("max_abs_output", ascending=False, kind="stable")
    ses = list(dict.fromkeys((str(r.kind), int(r.expert)) for r in _se_rows(verdict).itertuples()))
    ranked = dict.fromkeys((str(r.kind), int(r.expert)) for r in pool.itertuples())
    others = [k for k in ranked if k not in ses]
    return ses + others[: max(0, min(top, len(OKABE_ITO) - len(ses)))]


def _line_label(kind: str, expert: int, se_layers: list[int]) -> str:
    name = f"expert {expert}" if kind == "routed" else kind
    return f"{name}  (SE in L{', L'.join(map(str, se_layers))})" if se_layers else name


def fig_expert_lines(expert_stats: pd.DataFrame, verdict: Verdict | None = None, *, top: int = 4) -> Figure:
    """The paper's Fig. 3: x = layer, y = max |down_proj output|, one line per expert index that
    is an SE or a top candidate; SE points starred, grey = median over all experts of the layer."""
    moe = expert_stats[expert_stats["kind"] != "dense"]
    se_keys = {(int(r.layer), str(r.kind), int(r.expert)) for r in _se_rows(verdict).itertuples()}
    with style():
        fig = Figure(figsize=(11, 5.2), layout="constrained")
        ax = fig.subplots()
        # Median over experts that saw a token: a[l,e] = 0 only means "never routed".
        seen = moe[(moe["kind"] == "routed") & (moe["max_abs_output"] > 0)]
        median = seen.groupby("layer")["max_abs_output"].median()
        ax.plot(median.index, median.to_numpy(), color="#7f7f7f", linestyle="--", linewidth=1.5,
                label="median over the layer's experts")  # fmt: skip
        for i, (kind, expert) in enumerate(_tracked_experts(moe, verdict, top)):
            line = moe[(moe["kind"] == kind) & (moe["expert"] == expert)].sort_values("layer")
            starred = line[[(int(r.layer), kind, expert) in se_keys for r in line.itertuples()]]
            color, dash = OKABE_ITO[i % len(OKABE_ITO)], ("-", "--", ":")[i // len(OKABE_ITO) % 3]
            label = _line_label(kind, expert, starred["layer"].tolist())
            ax.plot(line["layer"], line["max_abs_output"].where(line["max_abs_output"] > 0), marker="o",
                    markersize=4, linewidth=2.2 if len(starred) else 1.2, linestyle=dash, color=color,
                    alpha=1.0 if len(starred) else 0.8, label=label)  # fmt: skip
            ax.plot(starred["layer"], starred["max_abs_output"], marker="*", markersize=18, color=color,
                    markeredgecolor="black", linestyle="none", zorder=4)  # fmt: skip
        if se_keys:
            ax.plot([], [], marker="*", markersize=14, color="white", markeredgecolor="black", ls="none",
                    label="Super Expert")  # fmt: skip
        _layer_axes(ax, "layer", "max |down_proj output|  (log scale)",
                    "Each expert index across layers: a Super Expert stands out in one layer")  # fmt: skip
    return fig


def _layer_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Log y over integer layers, legend outside the plot so no line hides behind it."""
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_title(title)


def fig_massive(layer_stats: pd.DataFrame, verdict: Verdict | None = None) -> Figure:
    """Top-1/2/3 |hidden| and median |hidden| per layer output (log y); a vertical line at each
    layer where an SE sits (the amplification chain: each SE adds to the same channel)."""
    stats = layer_stats.sort_values("layer")
    with style():
        fig = Figure(figsize=(11, 5.2), layout="constrained")
        ax = fig.subplots()
        series = [
            ("top1_abs", "largest |h|", "-", OKABE_ITO[0]),
            ("top2_abs", "2nd largest", "--", OKABE_ITO[4]),
            ("top3_abs", "3rd largest", ":", OKABE_ITO[2]),
            ("median_abs", "median |h|", "-", "#7f7f7f"),
        ]
        for column, label, dash, color in series:
            if column in stats:
                ax.plot(stats["layer"], stats[column].where(stats[column] > 0), linestyle=dash, marker="o",
                        markersize=4, linewidth=2, color=color, label=label)  # fmt: skip
        if "massive" in stats and stats["massive"].astype(bool).any():
            hit = stats[stats["massive"].astype(bool)]
            ax.plot(hit["layer"], hit["top1_abs"], "o", markersize=10, markerfacecolor="none",
                    markeredgecolor="black", label="massive (>100 and >1000x median)")  # fmt: skip
        _mark_se_layers(ax, _se_rows(verdict))
        _layer_axes(ax, "layer (hidden state after the layer)", "|hidden state|  (log scale)",
                    "Massive activation per layer; dotted lines: layers holding a Super Expert")  # fmt: skip
    return fig


def _mark_se_layers(ax, ses: pd.DataFrame) -> None:
    """Dotted line per SE layer; labels staggered in height so neighbouring layers stay legible."""
    for i, (layer, group) in enumerate(ses.groupby("layer")):
        ax.axvline(layer, color=OKABE_ITO[1], linestyle=":", linewidth=2)
        label = "\n".join(
            f"{expert_name(r.layer, r.kind, r.expert)} -> ch {int(r.channel)}" for r in group.itertuples()
        )
        ax.text(layer, 0.6 - 0.1 * (i % 4), label, transform=ax.get_xaxis_transform(), va="top", ha="left",
                fontsize=10, color=OKABE_ITO[1], fontweight="bold",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": OKABE_ITO[1], "lw": 0.8})  # fmt: skip


THRESHOLDS = (  # criterion key, legend label, colour, dash
    ("percentile_value", "P{percentile:g} = {value:.4g}", OKABE_ITO[0], "--"),
    ("max_fraction_value", "max x {max_fraction:g} = {value:.4g}", OKABE_ITO[1], "-."),
    ("threshold", "threshold = {value:.4g}", OKABE_ITO[2], "--"),
)


def fig_distribution(expert_stats: pd.DataFrame, verdict: Verdict | None = None) -> Figure:
    """Histogram of all a[l,e] (log x, log count) with the criterion's thresholds drawn; an SE
    must lie right of every threshold."""
    moe = expert_stats[(expert_stats["kind"] != "dense") & (expert_stats["max_abs_output"] > 0)]
    judged_layers = set((verdict.criterion.get("layers_judged") or []) if verdict is not None else [])
    judged = moe["layer"].isin(judged_layers) if judged_layers else pd.Series(True, index=moe.index)
    values = _positive(moe["max_abs_output"].to_numpy())
    with style():
        fig = Figure(figsize=(11, 4.8), layout="constrained")
        ax = fig.subplots()
        if values.size:
            low, high = values.min(), values.max()
            bins = np.logspace(np.log10(low) - 0.05, np.log10(high) + 0.05, 60)
            parts = [moe.loc[judged, "max_abs_output"], moe.loc[~judged, "max_abs_output"]]
            ax.hist(parts, bins=bins, stacked=True, color=[OKABE_ITO[5], "#bdbdbd"],
                    label=["experts in judged layers", "experts in other layers"])  # fmt: skip
            ax.set_xscale("log")
            ax.set_yscale("log")
        criterion = verdict.criterion if verdict is not None else {}
        for key, label, color, dash in THRESHOLDS:
            value = criterion.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                text = label.format(value=value, **{k: v for k, v in criterion.items() if k != "value"})
                if value > 0:
                    ax.axvline(value, color=color, linestyle=dash, linewidth=2.2, label=text)
                else:  # a zero threshold cannot sit on a log axis; keep it in the legend
                    ax.plot([], [], color=color, linestyle=dash, label=text + " (off the log axis)")
        for r in _se_rows(verdict).itertuples():
            ax.axvline(r.max_abs_output, ymax=0.12, color="black", linewidth=2.5)
        if not _se_rows(verdict).empty:
            ax.plot([], [], color="black", linewidth=2.5, label="Super Experts")
        ax.set_xlabel("a[l,e] = max |down_proj output| of an expert  (log scale)")
        ax.set_ylabel("number of experts  (log scale)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        ax.set_title("Distribution of expert maxima: Super Experts sit far right of both thresholds")
    return fig


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def svg_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", facecolor="white", metadata={"Date": None})
    return buf.getvalue()


def save_figure(fig: Figure, stem: str | os.PathLike, dpi: int = 110) -> list[Path]:
    """Write `stem`.png and `stem`.svg; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    paths[0].write_bytes(png_bytes(fig, dpi))
    paths[1].write_bytes(svg_bytes(fig))
    return paths
