"""batch_size="auto": the choice on hand-given budgets, parsing, and what profile records."""

from __future__ import annotations

import math

import pytest

import families
from superexperts import profile
from superexperts.capture.batching import (
    AUTO,
    MAX_TOKENS,
    choose_batch_size,
    parse_batch_size,
    resolve_batch_size,
)
from superexperts.models.costs import activation_bytes_per_token
from superexperts.models.shape import model_shape
from superexperts.runs.errors import UserError


def _largest_fitting(samples, seq_len, bytes_per_token, budget_bytes, max_tokens) -> int:
    """Brute force: the largest b whose activations and tokens fit (1 when none does)."""
    fits = [b for b in range(1, samples + 1) if b * seq_len * bytes_per_token <= budget_bytes
            and b * seq_len <= max_tokens]  # fmt: skip
    return max(fits, default=1)


@pytest.mark.parametrize("samples", [1, 7, 10, 128, 1000])
@pytest.mark.parametrize("seq_len", [64, 2048])
@pytest.mark.parametrize("budget_bytes", [1, 100 << 20, 8 << 30, 1 << 50])
@pytest.mark.parametrize("max_tokens", [16384, 65536])
def test_choice_fits_the_budgets_with_as_few_forwards_as_the_largest_fitting_batch(samples, seq_len, budget_bytes,
                                                                                  max_tokens):  # fmt: skip
    per_token = 300_000
    largest = _largest_fitting(samples, seq_len, per_token, budget_bytes, max_tokens)
    batch = choose_batch_size(samples=samples, seq_len=seq_len, bytes_per_token=per_token,
                              budget_bytes=budget_bytes, max_tokens=max_tokens)  # fmt: skip
    assert 1 <= batch <= largest
    assert math.ceil(samples / batch) == math.ceil(samples / largest)  # no extra forward
    # and the smallest batch with that many forwards: the most even split
    assert batch == 1 or math.ceil(samples / (batch - 1)) > math.ceil(samples / largest)


def test_hand_budgets():
    # 8 GiB for 600 kB a token at 2048 tokens a window: 6 windows; 16k tokens allow 8
    assert choose_batch_size(samples=128, seq_len=2048, bytes_per_token=600_000, budget_bytes=8 << 30,
                             max_tokens=16384) == 6  # 128 = 21 x 6 + 2 -> 22 forwards of at most 6
    assert choose_batch_size(samples=10, seq_len=256, bytes_per_token=1, budget_bytes=1 << 40,
                             max_tokens=2048) == 5  # cap 8 -> 2 forwards -> 5 + 5
    assert choose_batch_size(samples=4, seq_len=256, bytes_per_token=1, budget_bytes=1 << 40,
                             max_tokens=16384) == 4
    assert choose_batch_size(samples=4, seq_len=4096, bytes_per_token=10**9, budget_bytes=1,
                             max_tokens=16) == 1  # nothing fits: one window at a time


@pytest.mark.parametrize("value,expected", [("auto", AUTO), ("Auto", AUTO), (4, 4), ("12", 12)])
def test_parse(value, expected):
    assert parse_batch_size(value) == expected


@pytest.mark.parametrize("value", [0, "-1", "lots", 2.5, None])
def test_parse_rejects_with_the_flag_and_the_fix(value):
    with pytest.raises(UserError, match=r"--batch-size must be 'auto' or a whole number >= 1"):
        parse_batch_size(value)


def test_resolve_uses_the_model_estimate_and_the_budget():
    model = families.build("qwen3_moe")
    per_token = activation_bytes_per_token(model_shape(model), 16)
    batch, meta = resolve_batch_size(AUTO, model, samples=6, seq_len=16, budget_bytes=3 * 16 * per_token)
    assert batch == 3
    assert meta["batch_size_auto"]["estimated_bytes_per_token"] == per_token
    assert meta["batch_size_auto"]["max_tokens"] == MAX_TOKENS["cpu"]
    assert resolve_batch_size(AUTO, model, samples=6, seq_len=16, budget_bytes=16 * per_token - 1)[0] == 1
    assert resolve_batch_size("5", model, samples=6, seq_len=16) == (5, {"batch_size_requested": 5})


def test_profile_defaults_to_auto_and_records_request_and_batch():
    model = families.build("qwen3_moe")
    ids = families.random_ids(samples=5, seq_len=16)
    prof = profile(model, ids)
    assert prof.meta["batch_size_requested"] == AUTO
    assert prof.meta["batch_size"] == 5  # 80 tokens: far below every budget on a CPU
    assert "estimated" in prof.meta["layer_stats_method"]["median_abs"]
    explicit = profile(model, ids, batch_size=2)
    assert explicit.meta["batch_size"] == 2 and explicit.meta["batch_size_requested"] == 2
    # batching moves values by float rounding only (other matmul shapes), never a position
    cols = ["channel", "sample", "position", "tokens_routed"]
    assert prof.expert_stats[cols].equals(explicit.expert_stats[cols])
    assert prof.expert_stats.max_abs_output.to_numpy() == pytest.approx(explicit.expert_stats.max_abs_output, rel=1e-5)
    assert prof.layer_stats.top1_abs.to_numpy() == pytest.approx(explicit.layer_stats.top1_abs, rel=1e-5)
