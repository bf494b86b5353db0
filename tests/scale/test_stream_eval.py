"""Streamed perplexity equals the in-memory one, with and without ablated experts."""

from __future__ import annotations

import pytest
import torch

import families
from superexperts.evaluate.ablate import ablate
from superexperts.evaluate.perplexity import perplexity
from superexperts.scale.scoring import stream_perplexity

STREAM = families.random_ids(samples=1, seq_len=96, seed=5)[0]


@pytest.mark.parametrize(("family", "experts", "mode"), [
    ("qwen3_moe", None, "zero"),
    ("qwen3_moe", [(1, 3), (2, 5)], "zero"),
    ("deepseek_v3", [(1, 2), (2, "shared")], "zero"),
    ("mixtral", [(0, 1)], "skip"),
])  # fmt: skip
def test_stream_perplexity_equals_in_memory(checkpoints, family, experts, mode):
    model, folder = checkpoints(family, "hub")
    with ablate(model, experts, mode=mode) if experts else torch.no_grad():
        expected = perplexity(model, STREAM, seq_len=24, batch_size=2)
    streamed = stream_perplexity(folder, STREAM, experts=experts, mode=mode, seq_len=24, batch_size=2)
    assert streamed["windows"] == expected["windows"] == 4
    assert streamed["nll_sum"] == expected["nll_sum"]
    assert streamed["perplexity"] == expected["perplexity"]


def test_ablation_changes_the_streamed_number(checkpoints):
    _, folder = checkpoints("qwen3_moe", "hub")
    base = stream_perplexity(folder, STREAM, seq_len=24)
    pruned = stream_perplexity(folder, STREAM, experts=[(0, e) for e in range(8)], seq_len=24)
    assert pruned["nll_sum"] != base["nll_sum"]
