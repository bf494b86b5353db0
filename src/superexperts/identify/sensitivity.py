"""Sensitivity of the SE set to the rule's two thresholds (the paper's Table 9).

    >>> grid = sensitivity(table, num_layers=48)
    >>> sensitivity_verdict(grid)
    'stable: the same 3 SEs (1:68,2:92,3:82) in all 16 cells'
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..models.experts import experts_json, format_experts, parse_experts
from .rules import identify

PERCENTILES = (95.0, 99.0, 99.5, 99.9)
FRACTIONS = (0.07, 0.08, 0.09, 0.10)
# The cell the verdict compares against: the paper's default thresholds.
DEFAULT_CELL = (99.5, 0.10)


def sensitivity(
    table: pd.DataFrame,
    num_layers: int,
    percentiles: Sequence[float] = PERCENTILES,
    fractions: Sequence[float] = FRACTIONS,
    *,
    criterion: str = "paper",
    **params: Any,
) -> pd.DataFrame:
    """One row per (percentile, max_fraction) cell: the SE count and list under `criterion`
    (one that takes `percentile` and `max_fraction`: paper or reap); other params pass through."""
    rows = []
    for p in percentiles:
        for f in fractions:
            verdict = identify(table, num_layers, criterion, percentile=p, max_fraction=f, **params)
            experts = verdict.experts
            pool = verdict.criterion.get("percentile_pool", len(verdict.candidates))
            rows.append({"percentile": float(p), "max_fraction": float(f), "count": len(experts),
                         "super_experts": format_experts(experts), "pool": pool})  # fmt: skip
    return pd.DataFrame(rows, columns=["percentile", "max_fraction", "count", "super_experts", "pool"])


def percentile_cap(pool: int, percentile: float) -> int:
    """At most this many of `pool` values can lie strictly above their linear P_percentile: those
    ranked above the interpolation position (pool - 1) * p / 100. With few experts a high percentile
    alone caps the SE count (P99.9 of 384 experts passes at most 1)."""
    return pool - 1 - math.floor((pool - 1) * percentile / 100)


def _reference(grid: pd.DataFrame) -> tuple[str, str]:
    """(SE list the other cells are compared with, where it comes from): the paper's default cell,
    else the most common list."""
    at_default = grid[(grid["percentile"] == DEFAULT_CELL[0]) & (grid["max_fraction"] == DEFAULT_CELL[1])]
    if not at_default.empty:
        return str(at_default["super_experts"].iloc[0]), f"at P{DEFAULT_CELL[0]:g}/f{DEFAULT_CELL[1]:g}"
    return Counter(grid["super_experts"]).most_common(1)[0][0], "found most often"


def _diff(reference: str, other: str) -> str:
    ref, got = set(filter(None, reference.split(","))), set(filter(None, other.split(",")))
    added = [f"+{x}" for x in sorted(got - ref)]
    removed = [f"-{x}" for x in sorted(ref - got)]
    return " ".join(added + removed)


def capped_cells(grid: pd.DataFrame) -> list[dict[str, Any]]:
    """The percentiles whose cap (`percentile_cap` of the pool they are taken over) is below the SE
    count of the reference cell: those rows cannot find the reference's SEs whatever the data say.
    One record per (percentile, pool): {"percentile", "pool", "cap", "cells"} (cells that differ)."""
    reference, _ = _reference(grid)
    count = len(list(filter(None, reference.split(","))))
    out = []
    for (p, pool), rows in grid.groupby(["percentile", "pool"], sort=True):
        cap = percentile_cap(int(pool), float(p))
        if cap < count:
            out.append({"percentile": float(p), "pool": int(pool), "cap": cap,
                        "cells": int((rows["super_experts"] != reference).sum())})  # fmt: skip
    return out


def unstable_by(grid: pd.DataFrame) -> str | None:
    """Why cells differ from the reference: None (they do not), "percentile cap" (every one that differs is
    at a percentile that cannot select as many experts, `capped_cells`) or "data"."""
    reference, _ = _reference(grid)
    differ = grid[grid["super_experts"] != reference]
    if differ.empty:
        return None
    capped = [c["percentile"] for c in capped_cells(grid)]
    return "percentile cap" if differ["percentile"].isin(capped).all() else "data"


def _cells_text(rows: pd.DataFrame, reference: str) -> str:
    """'P99.9/f0.07,0.08: 1 (-1:13); ...': cells of one percentile with the same outcome in one entry."""
    groups: dict[tuple[float, int, str], list[float]] = {}
    for r in rows.itertuples():
        groups.setdefault((r.percentile, r.count, _diff(reference, r.super_experts)), []).append(r.max_fraction)
    return "; ".join(f"P{p:g}/f{','.join(f'{f:g}' for f in fs)}: {n} ({diff})" for (p, n, diff), fs in groups.items())


def sensitivity_verdict(grid: pd.DataFrame) -> str:
    """One line: 'stable: the same N SEs (...) in all 16 cells' or which cells differ and how; cells
    whose percentile alone cannot select that many experts are said to differ by that cap, not by the data."""
    reference, where = _reference(grid)
    count = len(list(filter(None, reference.split(","))))
    differ = grid[grid["super_experts"] != reference]
    if differ.empty:
        return f"stable: the same {count} SEs ({reference or 'none'}) in all {len(grid)} cells"
    capped = capped_cells(grid)
    by_cap = differ["percentile"].isin([c["percentile"] for c in capped])
    caps = "; ".join(f"P{c['percentile']:g} of {c['pool']} experts can select at most {c['cap']}" for c in capped)
    head = f"{len(differ)} of {len(grid)} cells differ from the {count} SEs ({reference or 'none'}) {where}"
    if by_cap.all():
        return (f"unstable, but only from the percentile's cap, not from the data: {head}, all at a percentile too high for "
                f"{count} SEs ({caps}): {_cells_text(differ, reference)}")  # fmt: skip
    line = f"unstable: {head}: {_cells_text(differ[~by_cap], reference)}"
    if by_cap.any():
        line += (f"; and from the percentile's cap, not from the data ({caps}): "
                 f"{_cells_text(differ[by_cap], reference)}")  # fmt: skip
    return line


def sensitivity_json(grid: pd.DataFrame, *, criterion: str = "paper") -> dict[str, Any]:
    """JSON form: {"criterion", "verdict", "stable", "unstable_by" (None, "data" or "percentile cap"),
    "capped": [{percentile, pool, cap, cells}] (capped_cells), "cells": [{percentile, max_fraction, count,
    pool (experts the percentile is taken over), super_experts: [{"layer", "expert"}]}]}."""
    cells = []
    for r in grid.itertuples():
        experts = experts_json(parse_experts(r.super_experts)) if r.super_experts else []
        cells.append({"percentile": r.percentile, "max_fraction": r.max_fraction, "count": int(r.count),
                      "pool": int(r.pool), "super_experts": experts})  # fmt: skip
    verdict = sensitivity_verdict(grid)
    stable = verdict.startswith("stable")
    return {"criterion": criterion, "verdict": verdict, "stable": stable, "unstable_by": unstable_by(grid),
            "capped": capped_cells(grid), "cells": cells}  # fmt: skip

