"""The paper's Table 9 grid on a stable and an unstable table, checked against a direct loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from expert_tables import background, expert_table
from superexperts.identify.sensitivity import (
    FRACTIONS,
    PERCENTILES,
    percentile_cap,
    sensitivity,
    sensitivity_json,
    sensitivity_verdict,
)
from superexperts.models.experts import format_experts


def _loop_se_sets(values: np.ndarray, judged_layers: int) -> dict[tuple[float, float], set]:
    """Independent: the rule written out with numpy for every cell."""
    judged = values[:judged_layers]
    out = {}
    for p in PERCENTILES:
        for f in FRACTIONS:
            mask = (judged > np.percentile(judged, p)) & (judged > judged.max() // (1 / f))
            out[(p, f)] = {(int(layer), int(e)) for layer, e in np.argwhere(mask)}
    return out


def test_stable_table_gives_the_same_set_in_all_16_cells():
    values = background(8, 512, seed=2)
    values[1, 5], values[2, 6], values[3, 7] = 900.0, 700.0, 500.0
    grid = sensitivity(expert_table(values), 8)
    assert len(grid) == 16 and set(grid["count"]) == {3}
    expected = _loop_se_sets(values, 6)
    for r in grid.itertuples():
        assert r.super_experts == format_experts(sorted(expected[(r.percentile, r.max_fraction)]))
    assert sensitivity_verdict(grid) == "stable: the same 3 SEs (1:5,2:6,3:7) in all 16 cells"


def test_unstable_table_names_the_cells_that_differ():
    values = background(8, 512, seed=2)
    values[1, 5] = 1000.0
    values[2, 6] = 75.0  # above 1000 // (1/0.07) = 70 but below 1000 // (1/0.08) = 80
    grid = sensitivity(expert_table(values), 8)
    expected = _loop_se_sets(values, 6)
    assert {(r.percentile, r.max_fraction): r.count for r in grid.itertuples()} == {
        cell: len(s) for cell, s in expected.items()}
    differ = grid[grid["count"] == 2]
    assert set(differ["max_fraction"]) == {0.07} and len(differ) == 4
    line = sensitivity_verdict(grid)
    assert line.startswith("unstable: 4 of 16 cells differ from the 1 SEs (1:5) at P99.5/f0.1: ")
    assert "P95/f0.07: 2 (+2:6)" in line and "\n" not in line


def test_sensitivity_json_is_serialisable_and_complete():
    values = background(8, 512, seed=2)
    values[1, 5] = 1000.0
    table = expert_table(values, shared={2: 400.0})
    data = sensitivity_json(sensitivity(table, 8))
    assert json.loads(json.dumps(data)) == data
    assert data["stable"] is True and len(data["cells"]) == 16
    assert data["cells"][0]["super_experts"] == [{"layer": 1, "expert": 5}, {"layer": 2, "expert": "shared"}]


@pytest.mark.parametrize("pool", [10, 200, 384, 1000, 4608])
@pytest.mark.parametrize("p", PERCENTILES)
def test_percentile_cap_matches_numpy(pool, p):
    values = np.arange(pool, dtype=float)  # distinct values: the cap is reached
    assert percentile_cap(pool, p) == int((values > np.percentile(values, p)).sum())


def _cap_by_hand(pool: int, p: float) -> int:
    """Independent of percentile_cap: the most of `pool` values the rule's `a > P_p(A)` (numpy's linear
    percentile, strict) can pass, reached when the values are distinct."""
    values = np.arange(pool, dtype=float)
    return int((values > np.percentile(values, p)).sum())


def test_small_pool_verdict_says_the_instability_is_the_percentile_cap():
    values = background(8, 64, seed=2)  # 6 judged layers (< round(0.75 * 8)) x 64 = 384 experts
    values[1, 5], values[2, 6] = 900.0, 700.0
    grid = sensitivity(expert_table(values), 8)
    cap = _cap_by_hand(6 * 64, 99.9)
    assert cap == 1  # not floor(384 * 0.001) = 0: the top value always passes a linear P99.9 of distinct values
    assert sensitivity_verdict(grid) == (
        "unstable, but only from the percentile's cap, not from the data: 4 of 16 cells differ from the 2 SEs "
        f"(1:5,2:6) at P99.5/f0.1, all at a percentile too high for 2 SEs (P99.9 of 384 experts can select at most "
        f"{cap}): P99.9/f0.07,0.08,0.09,0.1: 1 (-2:6)")  # fmt: skip
    data = sensitivity_json(grid)
    assert data["stable"] is False and data["unstable_by"] == "percentile cap"
    assert data["capped"] == [{"percentile": 99.9, "pool": 384, "cap": cap, "cells": 4}]


def test_data_instability_is_told_apart_from_the_cap():
    values = background(8, 64, seed=2)
    values[1, 5], values[2, 6] = 1000.0, 900.0
    values[3, 7] = 75.0  # above 1000 // (1/0.07) = 70 only, and above the percentile only at P95 and P99
    grid = sensitivity(expert_table(values), 8)
    line = sensitivity_verdict(grid)
    assert line.startswith("unstable: 6 of 16 cells differ from the 2 SEs (1:5,2:6) at P99.5/f0.1: "
                           "P95/f0.07: 3 (+3:7); P99/f0.07: 3 (+3:7); and from the percentile's cap, not from the "
                           f"data (P99.9 of 384 experts can select at most {_cap_by_hand(384, 99.9)}): ")  # fmt: skip
    assert sensitivity_json(grid)["unstable_by"] == "data"


def test_a_large_pool_is_not_capped():
    values = background(48, 128, seed=3)  # 36 judged layers x 128: P99.9 passes up to 5
    values[1, 5], values[2, 6], values[3, 7] = 900.0, 700.0, 500.0
    grid = sensitivity(expert_table(values), 48)
    assert _cap_by_hand(36 * 128, 99.9) == 5
    assert sensitivity_verdict(grid).startswith("stable") and sensitivity_json(grid)["capped"] == []


def test_the_demo_grid_is_unstable_only_by_the_cap(demo_profile_run):
    """On the demo model: P99.9 cannot select both planted SEs; the verdict says so with the real cap."""
    _, prof, _ = demo_profile_run
    table = prof.expert_stats
    judged = table[(table["kind"] != "dense") & (table["layer"] < round(0.75 * prof.num_layers))]
    cap = _cap_by_hand(len(judged), 99.9)
    data = sensitivity_json(sensitivity(table, prof.num_layers))
    assert data["unstable_by"] == "percentile cap"
    assert f"P99.9 of {len(judged)} experts can select at most {cap}):" in data["verdict"]
    assert [c["cap"] for c in data["capped"]] == [cap] and cap < 2
