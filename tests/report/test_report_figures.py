"""Figures: each is checked against the table it draws, computed here by a plain loop."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
from matplotlib.patches import Rectangle

from report_helpers import NUM_EXPERTS, NUM_LAYERS, PLANTED
from superexperts.report.eval_figures import fig_perplexity, fig_sinks
from superexperts.report.figures import (
    fig_distribution,
    fig_expert_lines,
    fig_heatmap,
    fig_massive,
    save_figure,
)


def _boxes(ax) -> set[tuple[int, int]]:
    """(x, y) centres of the unfilled black rectangles: the SE marks."""
    return {(round(p.get_x() + 0.5), round(p.get_y() + 0.5)) for p in ax.patches
            if isinstance(p, Rectangle) and not p.get_fill()}  # fmt: skip


def test_heatmap_cells_are_the_expert_maxima(hand_profile, hand_verdict):
    fig = fig_heatmap(hand_profile.expert_stats, hand_verdict)
    main, shared = fig.axes[0], fig.axes[1]
    grid = main.images[0].get_array()  # masked (layers, experts)
    assert grid.shape == (NUM_LAYERS, NUM_EXPERTS)
    for r in hand_profile.expert_stats.itertuples():
        if r.kind == "routed":
            cell = grid[r.layer, r.expert]
            assert (
                (cell is np.ma.masked) if r.max_abs_output == 0 else cell == pytest.approx(r.max_abs_output)
            )
        elif r.kind == "shared":
            assert shared.images[0].get_array()[r.layer, 0] == pytest.approx(r.max_abs_output)
        else:  # the dense layer: no expert cells, a hatched band labelled "dense"
            assert grid[r.layer].mask.all()
    assert any(p.get_hatch() for p in main.patches)
    assert "0 dense" in [t.get_text() for t in main.get_yticklabels()]
    assert fig.axes[-1].get_yscale() == "log" or main.images[0].norm.__class__.__name__ == "LogNorm"


def test_heatmap_boxes_the_super_experts(hand_profile, hand_verdict):
    fig = fig_heatmap(hand_profile.expert_stats, hand_verdict)
    routed = {(e, layer) for (layer, kind, e) in PLANTED if kind == "routed"}
    shared = {(0, layer) for (layer, kind, _) in PLANTED if kind == "shared"}
    assert _boxes(fig.axes[0]) == routed
    assert _boxes(fig.axes[1]) == shared


def test_expert_lines_follow_each_index_across_layers(hand_profile, hand_verdict):
    table = hand_profile.expert_stats
    fig = fig_expert_lines(table, hand_verdict, top=3)
    labelled = [line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")]
    lines = {line.get_label().split("  (")[0]: line for line in labelled}  # "expert 5  (SE in L2)"
    # The SEs' indices first, then the 3 strongest other indices of the judged layers, by a plain sort.
    judged = table[(table.layer < round(0.75 * NUM_LAYERS)) & (table.kind != "dense")]
    ranked = sorted(judged.itertuples(), key=lambda r: -r.max_abs_output)
    names = []
    for r in ranked:
        name = f"expert {r.expert}" if r.kind == "routed" else r.kind
        if name not in names:
            names.append(name)
    expected = names[: 3 + 3]  # the 3 SEs are the 3 largest values here
    assert [n for n in lines if n.startswith(("expert", "shared"))] == expected
    for name in expected:
        rows = table[(table.kind == "routed") & (table.expert == int(name.split()[1]))] if name != "shared" \
            else table[table.kind == "shared"]  # fmt: skip
        rows = rows.sort_values("layer")
        np.testing.assert_allclose(lines[name].get_xdata(), rows.layer)
        np.testing.assert_allclose(np.nan_to_num(lines[name].get_ydata().astype(float)),
                                   rows.max_abs_output.where(rows.max_abs_output > 0, 0.0))  # fmt: skip
    se_labels = {line.get_label() for line in labelled if "SE in" in line.get_label()}
    assert se_labels == {"expert 5  (SE in L2)", "shared  (SE in L3)", "expert 9  (SE in L4)"}
    assert fig.axes[0].get_yscale() == "log"


def test_massive_figure_draws_the_layer_table_and_marks_se_layers(hand_profile, hand_verdict):
    fig = fig_massive(hand_profile.layer_stats, hand_verdict)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["largest |h|"].get_ydata(), hand_profile.layer_stats.top1_abs)
    np.testing.assert_allclose(lines["median |h|"].get_ydata(), hand_profile.layer_stats.median_abs)
    verticals = {line.get_xdata()[0] for line in ax.get_lines() if len(set(line.get_xdata())) == 1
                 and len(line.get_xdata()) == 2}  # fmt: skip
    assert verticals == {layer for layer, _, _ in PLANTED}
    assert ax.get_yscale() == "log"


def test_distribution_draws_both_thresholds(hand_profile, hand_verdict):
    table = hand_profile.expert_stats
    fig = fig_distribution(table, hand_verdict)
    ax = fig.axes[0]
    judged = table[(table.layer < 9) & (table.kind != "dense")].max_abs_output.to_numpy()
    expected = {"P99.5": np.percentile(judged, 99.5), "max x 0.1": judged.max() // 10}
    drawn = {
        line.get_label().split(" = ")[0]: line.get_xdata()[0]
        for line in ax.get_lines()
        if len(line.get_xdata())
    }
    for name, value in expected.items():
        assert drawn[name] == pytest.approx(value)
    positive = int(((table.kind != "dense") & (table.max_abs_output > 0)).sum())
    assert sum(p.get_height() for c in ax.containers for p in c.patches) == positive
    assert ax.get_xscale() == "log"


def test_zero_threshold_stays_in_the_legend(hand_profile, hand_verdict):
    verdict = type(hand_verdict)(hand_verdict.criterion | {"max_fraction_value": 0.0},
                                 hand_verdict.super_experts, hand_verdict.candidates)  # fmt: skip
    labels = [
        t.get_text() for t in fig_distribution(hand_profile.expert_stats, verdict).axes[0].get_legend().texts
    ]
    assert any("off the log axis" in label for label in labels)


def test_save_figure_writes_png_and_svg(tmp_path, hand_profile, hand_verdict):
    png, svg = save_figure(
        fig_heatmap(hand_profile.expert_stats, hand_verdict), tmp_path / "figs" / "heatmap"
    )
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 300 and image.shape[1] > 800
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert "<svg" in svg.read_text()[:500]


def test_perplexity_bars_are_the_values_and_dollar_names_stay_literal():
    conditions = [{"name": "original", "perplexity": 8.7}, {"name": "cost $5 $x$", "perplexity": 120.0},
                  {"name": "missing", "perplexity": None}]  # fmt: skip
    fig = fig_perplexity(conditions)
    ax = fig.axes[0]
    assert [p.get_width() for p in ax.patches] == [8.7, 120.0, 0.0]
    assert ax.get_xscale() == "log"  # 120 / 8.7 spans more than a decade
    fig.canvas.draw()  # would raise on a math-text parse of "$x$" if names were not made literal
    assert [t.get_text() for t in ax.get_yticklabels()][1] == r"cost \$5 \$x\$"


def test_sinks_figure_plots_each_condition():
    conditions = [{"name": "original", "sink_mass": [0.1, 0.6, 0.9]},
                  {"name": "pruned", "sink_mass": [0.1, 0.1, 0.05], "d_sink": [0.0, 0.8, 0.95]}]  # fmt: skip
    mass_ax, decay_ax = fig_sinks(conditions).axes
    mass = {line.get_label(): list(line.get_ydata()) for line in mass_ax.get_lines()}
    decay = {
        line.get_label(): list(line.get_ydata())
        for line in decay_ax.get_lines()
        if line.get_label() == "pruned"
    }
    assert mass == {"original": [0.1, 0.6, 0.9], "pruned": [0.1, 0.1, 0.05]}
    assert decay == {"pruned": [0.0, 0.8, 0.95]}
