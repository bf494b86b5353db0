"""Super Expert criteria: pure functions over a profile's expert table.

Each criterion takes the expert table (columns layer, expert, kind, max_abs_output, ...) and
the model's layer count, and returns a `Verdict`. No model, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .errors import UserError, did_you_mean


@dataclass(frozen=True)
class Verdict:
    """The SEs a criterion found, with the thresholds it used (for the report and JSON)."""

    criterion: dict[str, Any]  # name, parameters and computed thresholds
    super_experts: pd.DataFrame  # rows of the expert table, sorted by max_abs_output desc
    candidates: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)  # the pool judged

    @property
    def experts(self) -> list[tuple[int, int | str]]:
        """[(layer, expert)] with expert 'shared' for shared experts."""
        return [(int(r.layer), expert_label(r.kind, r.expert)) for r in self.super_experts.itertuples()]


def expert_label(kind: str, expert: int) -> int | str:
    """JSON form of an expert: its index, or 'shared' / 'dense'."""
    return int(expert) if kind == "routed" else kind


def layer_filter(num_layers: int, include_layers: float | list[int]) -> list[int]:
    """Layers judged: a fraction f keeps layers < round(f * L) (the reference's 0.75), a list is explicit."""
    if isinstance(include_layers, (list, tuple)):
        bad = [i for i in include_layers if not 0 <= int(i) < num_layers]
        if bad:
            raise UserError(f"--include-layers {bad} out of range; the model has layers 0..{num_layers - 1}.")
        return sorted(int(i) for i in include_layers)
    if not 0 < include_layers <= 1:
        raise UserError(f"--include-layers fraction {include_layers} must be in (0, 1], e.g. 0.75.")
    # Python's round, as the reference (`round(0.75 * num_layers)`).
    return list(range(round(include_layers * num_layers)))


def candidate_pool(table: pd.DataFrame, layers: list[int]) -> pd.DataFrame:
    """Routed and shared experts of the judged layers; dense MLPs are never SEs."""
    return table[(table["kind"] != "dense") & table["layer"].isin(layers)]


def _check_range(name: str, value: float, low: float, high: float, high_inclusive: bool = False) -> None:
    ok = low < value <= high if high_inclusive else low < value < high
    if not ok:
        bracket = "]" if high_inclusive else ")"
        raise UserError(f"{name}={value} is out of range; it must be in ({low}, {high}{bracket}.")


def _select(pool: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    return pool[mask].sort_values("max_abs_output", ascending=False, kind="stable").reset_index(drop=True)


def paper(
    table: pd.DataFrame,
    num_layers: int,
    *,
    percentile: float = 99.5,
    max_fraction: float = 0.1,
    include_layers: float | list[int] = 0.75,
    floor_division: bool = True,
) -> Verdict:
    """Paper Eq. 6 with the reference's semantics: a > P_percentile(A) and a > max(A)/10, over the
    experts of layers < round(0.75 L); numpy's linear percentile; `max // 10` (floor) by default."""
    _check_range("percentile", percentile, 0, 100)
    _check_range("max_fraction", max_fraction, 0, 1, high_inclusive=True)
    layers = layer_filter(num_layers, include_layers)
    pool = candidate_pool(table, layers)
    if pool.empty:
        raise UserError(f"no experts in layers {layers}; widen --include-layers.")
    values = pool["max_abs_output"].to_numpy(dtype=np.float64)
    p_value = float(np.percentile(values, percentile))
    top = float(values.max())
    # The reference writes `max // 10`; for another fraction f that is `max // (1/f)`.
    max_value = top // (1.0 / max_fraction) if floor_division else top * max_fraction
    criterion = {
        "name": "paper",
        "percentile": percentile,
        "max_fraction": max_fraction,
        "include_layers": include_layers,
        "floor_division": floor_division,
        "layers_judged": layers,
        "percentile_value": p_value,
        "max_value": top,
        "max_fraction_value": max_value,
    }
    return Verdict(criterion, _select(pool, (values > p_value) & (values > max_value)), pool)


Criterion = Callable[..., Verdict]
CRITERIA: dict[str, Criterion] = {"paper": paper}


def get_criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        choices = sorted(CRITERIA)
        raise UserError(f"Unknown criterion '{name}'. {did_you_mean(name, choices)}Available: {', '.join(choices)}.")
    return CRITERIA[name]


def identify(table: pd.DataFrame, num_layers: int, criterion: str = "paper", **params: Any) -> Verdict:
    """Apply a named criterion to an expert table."""
    return get_criterion(criterion)(table, num_layers, **params)


def flag_massive(layer_stats: pd.DataFrame, *, min_abs: float = 100.0, min_ratio: float = 1000.0) -> pd.Series:
    """Sun et al. 2024: a massive activation exceeds `min_abs` and `min_ratio` x the median magnitude."""
    top = layer_stats["top1_abs"]
    return (top > min_abs) & (top > min_ratio * layer_stats["median_abs"])
