"""What a change to a model did to its Super Experts: pure functions over two profiles' tables.

Used by `quant-eval` (fake-quantized vs original model) and `audit` (compressed vs original
checkpoint), both measured on the same calibration windows:

- `se_outputs`: each SE's a[l,e] (max |down_proj output|, paper Eq. 6) before and after;
- `massive`: top-1 |hidden| after each layer, and `retention` = after / before per layer;
- `fed_massive`: the massive activation an SE feeds, max |hidden| over its layer and every later
  one (the residual stream it writes into; the same measure as `prune-eval --causal`).

>>> se_outputs(before.expert_stats, after.expert_stats, [(1, 13)])[0]["relative_change"]
-0.07
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..identify.compare import expert_values
from ..models.experts import Expert


def _ratio(after: float, before: float) -> float:
    return after / before if before > 0 else float("nan")


def se_outputs(before: pd.DataFrame, after: pd.DataFrame, experts: list[Expert]) -> list[dict[str, Any]]:
    """Per SE: a[l,e] before and after, and the relative change (after - before) / before."""
    vb, va = expert_values(before), expert_values(after)
    rows = []
    for layer, expert in experts:
        b, a = vb.get((layer, expert), float("nan")), va.get((layer, expert), float("nan"))
        rows.append({"layer": layer, "expert": expert, "max_abs_output_before": b, "max_abs_output_after": a,
                     "relative_change": _ratio(a, b) - 1.0})  # fmt: skip
    return rows


def massive(layer_stats: pd.DataFrame) -> list[float]:
    """Top-1 |hidden| after each decoder layer, in layer order."""
    return [float(v) for v in layer_stats.sort_values("layer")["top1_abs"]]


def retention(before: list[float], after: list[float]) -> list[float]:
    """after / before per layer (NaN where the original is 0)."""
    return [_ratio(a, b) for b, a in zip(before, after)]


def fed_massive(before: list[float], after: list[float], layer: int) -> tuple[float, float]:
    """(before, after) of the massive activation an expert of `layer` feeds: max over layers >= layer."""
    return max(before[layer:]), max(after[layer:])


def worst_retention(values: list[float], from_layer: int = 0) -> float:
    """The smallest finite retention from `from_layer` on (NaN when there is none)."""
    finite = [v for v in values[from_layer:] if not math.isnan(v)]
    return min(finite) if finite else float("nan")
