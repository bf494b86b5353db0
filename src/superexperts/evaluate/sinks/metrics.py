"""Sink metrics as pure functions of per-query attention masses (no model needed).

Inputs are the arrays `attention.sink_probabilities` records for one layer: `mass (batch, heads,
queries)` = attention probability of each query on the sink keys, and `visible` of the same shape =
the query's mask lets it see a sink key. Every aggregation over queries uses the positions t > 0
that can see a sink key (t = 0 can only attend to itself; queries past a sliding window cannot
see the first token at all), as stated by `QUERY_AGGREGATION`.

    >>> mass = torch.tensor([[[0.0, 0.9, 0.8]]])            # (batch=1, heads=1, queries=3)
    >>> head_sums(mass)                                     # (sum over t > 0, count) per head
    (tensor([1.7000], dtype=torch.float64), tensor([2.], dtype=torch.float64))
"""

from __future__ import annotations

import math

import torch

EPSILON = 0.3  # Gu et al.: a head "has a sink" when its mean attention to the first token exceeds this
QUERY_AGGREGATION = (
    "mean over query positions t > 0 that can attend to a sink token (causal mask, sliding window), "
    "over all samples; D_sink: per-query ratio sum_S p'/sum_S p averaged over those queries and heads"
)


def _counted(mass: torch.Tensor, visible: torch.Tensor | None) -> torch.Tensor:
    """Bool (batch, heads, queries): the queries that enter every aggregation."""
    keep = torch.ones_like(mass, dtype=torch.bool) if visible is None else visible.expand_as(mass).clone()
    keep[..., 0] = False
    return keep


def head_sums(mass: torch.Tensor, visible: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head: (sum of sink mass, number of queries) over counted queries and the batch.
    Sums, not means, so batches can be accumulated exactly."""
    keep = _counted(mass, visible)
    m = torch.where(keep, mass.double(), 0.0)
    return m.sum(dim=(0, 2)), keep.double().sum(dim=(0, 2))


def ratio_sums(mass: torch.Tensor, mass_after: torch.Tensor, visible: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per head: (sum of p'_t(S) / p_t(S), count) over counted queries with p_t(S) > 0 (paper Eq. 7)."""
    keep = _counted(mass, visible) & (mass > 0)
    ratio = torch.where(keep, mass_after.double() / mass.double().clamp_min(1e-300), 0.0)
    return ratio.sum(dim=(0, 2)), keep.double().sum(dim=(0, 2))


def safe_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """total / count, NaN where nothing was counted (a head that never sees the sink)."""
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def d_sink(ratio_total: torch.Tensor, ratio_count: torch.Tensor) -> float:
    """Attention sink decay rate of one layer (paper Eq. 7) from per-head ratio sums:
    D = 1 - (1/H) sum_h mean_t [sum_S p'_{t,i} / sum_S p_{t,i}], heads without counted queries skipped."""
    per_head = safe_mean(ratio_total, ratio_count)
    per_head = per_head[~per_head.isnan()]
    return float("nan") if per_head.numel() == 0 else 1.0 - float(per_head.mean())


def sink_rate(head_mass: torch.Tensor, epsilon: float = EPSILON) -> float:
    """Share of (layer, head) whose mean attention to the first token exceeds epsilon (Gu et al.).
    head_mass: (layers, heads), NaN for heads that never see the first token (not counted)."""
    valid = ~head_mass.isnan()
    if not valid.any():
        return float("nan")
    return float((head_mass[valid] > epsilon).double().mean())


def top_k_keys(key_mass: torch.Tensor, k: int) -> list[int]:
    """The k key positions with the most attention, summed over everything but the key axis.
    key_mass: (..., keys). Sorted ascending so the first token, when chosen, comes first."""
    total = key_mass.double().reshape(-1, key_mass.shape[-1]).sum(0)
    k = min(k, total.numel())
    return sorted(int(i) for i in total.topk(k).indices)


def mean_or_nan(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")
