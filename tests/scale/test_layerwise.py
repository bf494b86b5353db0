"""Layer streaming gives exactly the in-memory profile, for every checkpoint layout."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

import families
from superexperts.capture.profile import profile
from superexperts.scale import stream_profile

IDS = families.random_ids(samples=4, seq_len=16)


def assert_same_profile(a, b) -> None:
    pd.testing.assert_frame_equal(a.expert_stats, b.expert_stats)
    pd.testing.assert_frame_equal(a.layer_stats, b.layer_stats)
    pd.testing.assert_frame_equal(a.atom_stats, b.atom_stats)


@pytest.mark.parametrize("family", ["qwen3_moe", "qwen2_moe", "mixtral", "deepseek_v3", "gpt_oss", "llama4"])
def test_per_expert_checkpoint_equals_in_memory(checkpoints, family):
    model, folder = checkpoints(family, "hub")
    if family not in ("llama4", "gpt_oss"):  # their hub layout is fused; the others are split per expert
        assert any(".experts.3." in k for k in _keys(folder)), "checkpoint is not in the per-expert layout"
    assert_same_profile(profile(model, IDS, batch_size=2), stream_profile(folder, IDS, batch_size=2))


@pytest.mark.parametrize("family", ["qwen3_moe", "gpt_oss", "deepseek_v2"])
def test_fused_checkpoint_equals_in_memory(checkpoints, family):
    model, folder = checkpoints(family, "fused")
    assert any(k.endswith("experts.down_proj") for k in _keys(folder))
    assert_same_profile(profile(model, IDS, batch_size=3), stream_profile(folder, IDS, batch_size=3))


def test_sharded_checkpoint_with_spilled_activations(checkpoints):
    model, folder = checkpoints("olmoe", "sharded")
    assert (folder / "model.safetensors.index.json").is_file() and len(list(folder.glob("*.safetensors"))) > 2
    streamed = stream_profile(folder, IDS, batch_size=1, activation_budget=2 * 16 * 32 * 4)
    assert streamed.meta["spilled_batches"] > 0  # only two batches fit the budget
    assert_same_profile(profile(model, IDS, batch_size=1), streamed)


def test_bf16_matches_from_pretrained(checkpoints):
    _, folder = checkpoints("mixtral", "hub")
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    streamed = stream_profile(folder, IDS, batch_size=2, dtype=torch.bfloat16)
    assert streamed.meta["dtype"] == "bfloat16"
    assert_same_profile(profile(loaded, IDS, batch_size=2), streamed)


def _keys(folder):
    from safetensors import safe_open

    keys = []
    for path in folder.glob("*.safetensors"):
        with safe_open(path, framework="pt") as f:
            keys += list(f.keys())
    return keys
