"""Sink metrics on hand-made probability arrays, against straightforward loops."""

from __future__ import annotations

import math

import torch

from superexperts.evaluate.sinks import metrics


def hand_d_sink(p, p_after, visible):
    """Eq. 7 written out: per head, mean over counted queries t > 0 of p'_t/p_t; 1 - mean over heads."""
    batch, heads, queries = p.shape
    per_head = []
    for h in range(heads):
        ratios = [p_after[b, h, t] / p[b, h, t] for b in range(batch) for t in range(1, queries)
                  if visible[b, h, t] and p[b, h, t] > 0]
        if ratios:
            per_head.append(sum(ratios) / len(ratios))
    return 1 - sum(per_head) / len(per_head)


def test_d_sink_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(2, 3, 6, generator=g, dtype=torch.float64)
    p_after = p * torch.rand(2, 3, 6, generator=g, dtype=torch.float64)
    visible = torch.ones(2, 3, 6, dtype=torch.bool)
    visible[:, :, 4:] = False  # queries past a sliding window
    p[0, 1, 2] = 0.0  # a query with no mass on the sink: no ratio
    got = metrics.d_sink(*metrics.ratio_sums(p, p_after, visible))
    assert math.isclose(got, hand_d_sink(p, p_after, visible), rel_tol=1e-12)


def test_d_sink_endpoints():
    p = torch.full((1, 2, 5), 0.8)
    assert metrics.d_sink(*metrics.ratio_sums(p, p)) == 0.0  # unchanged sink
    assert metrics.d_sink(*metrics.ratio_sums(p, torch.zeros_like(p))) == 1.0  # gone
    assert math.isnan(metrics.d_sink(*metrics.ratio_sums(p, p, torch.zeros_like(p, dtype=torch.bool))))


def test_head_sums_skip_query_zero_and_invisible_queries():
    mass = torch.tensor([[[1.0, 0.5, 0.7, 0.9], [1.0, 0.1, 0.2, 0.3]]])  # (1, 2 heads, 4 queries)
    visible = torch.tensor([[[True, True, True, False]]])  # broadcast over heads
    total, count = metrics.head_sums(mass, visible)
    assert torch.allclose(total, torch.tensor([1.2, 0.3], dtype=torch.float64))
    assert torch.equal(count, torch.tensor([2.0, 2.0], dtype=torch.float64))
    assert torch.allclose(metrics.safe_mean(total, count), torch.tensor([0.6, 0.15], dtype=torch.float64))
    assert metrics.safe_mean(torch.tensor([0.0]), torch.tensor([0.0])).isnan().all()


def test_sink_rate_counts_heads_above_epsilon_and_ignores_nan():
    head_mass = torch.tensor([[0.9, 0.31, 0.3, float("nan")], [0.0, 0.5, 0.29, 0.8]])
    expected = sum(v > 0.3 for v in [0.9, 0.31, 0.3, 0.0, 0.5, 0.29, 0.8]) / 7
    assert metrics.sink_rate(head_mass) == expected
    assert metrics.sink_rate(head_mass, epsilon=0.85) == 1 / 7
    assert math.isnan(metrics.sink_rate(torch.full((1, 2), float("nan"))))


def test_top_k_keys():
    key_mass = torch.zeros(2, 3, 10)
    key_mass[..., 0] = 5.0
    key_mass[0, 0, 7] = 9.0
    key_mass[1, 2, 3] = 1.0
    assert metrics.top_k_keys(key_mass, 2) == [0, 7]
    assert metrics.top_k_keys(key_mass, 3) == [0, 3, 7]
    assert metrics.top_k_keys(key_mass, 50) == list(range(10))
