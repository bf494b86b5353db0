"""--stream refuses checkpoint tensors the model has no place for, as in-memory loading does (issue 14.3)."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import families
from superexperts.runs.errors import UserError
from superexperts.scale import stream_profile

IDS = families.random_ids(samples=2, seq_len=8)


def _with_extra(folder, tmp_path, name):
    copy = shutil.copytree(folder, tmp_path / "ckpt")
    tensors = load_file(copy / "model.safetensors") | {name: torch.ones(4)}
    save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    return copy


def test_unexpected_tensor_is_refused(checkpoints, tmp_path):
    _, folder = checkpoints("qwen3_moe", "hub")
    broken = _with_extra(folder, tmp_path, "model.layers.1.extra.weight")
    with pytest.raises(UserError, match=r"1 checkpoint tensor\(s\) the model has no place for \(model.layers.1.extra"):
        stream_profile(broken, IDS)


def test_tensors_transformers_ignores_are_accepted(checkpoints, tmp_path):
    """An old per-layer rotary buffer: transformers drops it on purpose, so streaming does too."""
    _, folder = checkpoints("qwen3_moe", "hub")
    stream_profile(_with_extra(folder, tmp_path, "model.layers.0.self_attn.rotary_emb.inv_freq"), IDS)
