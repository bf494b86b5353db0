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


def sensitivity_verdict(grid: pd.DataFrame) -> str:
    """One line: 'stable: the same N SEs (...) in all 16 cells' or which cells differ and how."""
    reference, where = _reference(grid)
    count = len(list(filter(None, reference.split(","))))
    differ = grid[grid["super_experts"] != reference]
    if differ.empty:
        return f"stable: the same {count} SEs ({reference or 'none'}) in all {len(grid)} cells"
    cells = "; ".join(f"P{r.percentile:g}/f{r.max_fraction:g}: {r.count} "
                      f"({_diff(reference, r.super_experts)})" for r in differ.itertuples())  # fmt: skip
    capped = sorted({(r.percentile, r.pool) for r in differ.itertuples()
                     if r.count < count and r.count == percentile_cap(r.pool, r.percentile)})  # fmt: skip
    if capped:
        notes = ", ".join(f"P{p:g} of {n} experts passes at most {percentile_cap(n, p)}" for p, n in capped)
        cells += f" [the percentile alone caps these: {notes}]"
    return (f"unstable: {len(differ)} of {len(grid)} cells differ "
            f"from the {count} SEs ({reference or 'none'}) "
            f"{where}: {cells}")  # fmt: skip


def sensitivity_json(grid: pd.DataFrame, *, criterion: str = "paper") -> dict[str, Any]:
    """JSON form: {"criterion", "verdict", "stable", "cells": [{percentile, max_fraction, count,
    pool (experts the percentile is taken over), super_experts: [{"layer", "expert"}]}]}."""
    cells = []
    for r in grid.itertuples():
        experts = experts_json(parse_experts(r.super_experts)) if r.super_experts else []
        cells.append({"percentile": r.percentile, "max_fraction": r.max_fraction, "count": int(r.count),
                      "pool": int(r.pool), "super_experts": experts})  # fmt: skip
    verdict = sensitivity_verdict(grid)
    stable = verdict.startswith("stable")
    return {"criterion": criterion, "verdict": verdict, "stable": stable, "cells": cells}

