"""Hybrid, multi-stream and vision-language MoE families end to end: a tiny checkpoint of each, with one
Super Expert planted (one down_proj column scaled, as tests/evaluate/ablate/planted.py plants super
weights), is loaded by `superexperts profile` (vision-language ones through AutoModelForImageTextToText,
calibrated on text) and the planted expert is the one found."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

import families
import registry
from recompute import fused_expert_out, recorded_inputs
from superexperts.cli import main
from superexperts.models.adapters import map_model

# DeepSeek-V4: multi-stream hidden states; Nemotron-H: Mamba/attention/MoE hybrid at `mixer`;
# three vision-language MoE families (and Qwen3.5-MoE, causal LM and VL in one config).
FAMILIES = ["deepseek_v4", "nemotron_h", "qwen3_vl_moe", "aria", "minimax_m3_vl", "qwen3_5_moe"]
GAIN = 1000.0


@torch.no_grad()
def plant(model, ids: torch.Tensor) -> tuple[int, int]:
    """Scale the down_proj column of the most active intermediate unit of the busiest expert of the
    first MoE layer (inside the paper's first 75% of layers); returns (layer, expert)."""
    mm = map_model(model)
    block = next(b for b in mm.moe if b.layer < round(0.75 * mm.num_layers))
    x, index = recorded_inputs(model, ids, batch_size=len(ids))[block.layer][0][:2]
    expert = int(torch.bincount(index.reshape(-1), minlength=block.num_experts).argmax())
    h, _ = fused_expert_out(block.experts, expert, x[(index == expert).any(-1)])
    unit = int(h.abs().amax(0).argmax())
    block.experts.down_proj[expert][:, unit] *= GAIN  # [hidden, intermediate]: column = one unit's writes
    return block.layer, expert


def planted_checkpoint(name: str, folder) -> tuple[registry.Family, tuple[int, int]]:
    """A tiny checkpoint of `name` with one planted SE and the char tokenizer; (family, planted SE)."""
    family = registry.family(name)
    model = registry.build(family)
    tokenizer = families.char_tokenizer()
    ids = tokenizer(["The quick brown fox jumps", "over the lazy dog again"]).input_ids
    planted = plant(model, torch.tensor([i[:16] for i in ids]))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return family, planted


def run_profile(folder, out, *extra) -> list[tuple[int, int]]:
    assert main(["profile", str(folder), "--out", str(out), "--seq-len", "16", "--samples", "4", "--device", "cpu",
                 "--no-report", *extra]) == 0  # fmt: skip
    return [(r["layer"], r["expert"]) for r in json.loads((out / "super_experts.json").read_text())["super_experts"]]


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_planted_super_expert_is_found(name, tmp_path, capsys):
    family, planted = planted_checkpoint(name, tmp_path / "ckpt")
    assert run_profile(tmp_path / "ckpt", tmp_path / "run") == [planted], capsys.readouterr().err
    meta = json.loads((tmp_path / "run" / "profile.json").read_text())
    vision_language = family.mapping == "image_text_to_text"
    assert ("calibration_modality" in json.dumps(meta)) == vision_language
    if vision_language:
        assert "profiles its language model on text only" in capsys.readouterr().err


@pytest.mark.slow
def test_hybrid_streams_and_measures_sinks_on_its_attention_layers(tmp_path, capsys):
    """Nemotron-H: --stream finds the same SE (its forward reads each layer's block_type); sinks maps only
    its attention layers, and the other layers' sink metrics are NaN, not a crash."""
    _, planted = planted_checkpoint("nemotron_h", tmp_path / "ckpt")
    assert run_profile(tmp_path / "ckpt", tmp_path / "stream", "--stream") == [planted]
    common = ["sinks", str(tmp_path / "ckpt"), "--from", str(tmp_path / "stream"), "--seq-len", "16", "--samples",
              "2", "--device", "cpu"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "sinks")]) == 0
    result = json.loads((tmp_path / "sinks" / "sinks.json").read_text())
    mass = result["conditions"][0]["sink_mass_per_head"]  # (layers, heads); NaN/None where nothing attends
    attention = [i for i, row in enumerate(mass) if not all(v in (None, "nan") or math.isnan(v) for v in row)]
    assert len(mass) == 4 and 0 < len(attention) < len(mass)
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "s2"), "--layers", "0"]) == 2
    assert "have no attention" in capsys.readouterr().err


@pytest.mark.slow
def test_deepseek_v4_sinks_maps_with_more_keys_than_tokens(tmp_path):
    """DeepSeek-V4 attends to compressed keys besides the tokens: its attention maps are wider than tall."""
    _, planted = planted_checkpoint("deepseek_v4", tmp_path / "ckpt")
    assert run_profile(tmp_path / "ckpt", tmp_path / "run") == [planted]
    assert main(["sinks", str(tmp_path / "ckpt"), "--from", str(tmp_path / "run"), "--seq-len", "16", "--samples",
                 "2", "--device", "cpu", "--out", str(tmp_path / "sinks")]) == 0  # fmt: skip
    assert (tmp_path / "sinks" / "sinks_maps.png").is_file()


@pytest.mark.slow
def test_deepseek_v4_streams_to_the_in_memory_table(tmp_path):
    """Its checkpoint keeps the final norm at `model.norm` although a rename rule targets `.norm.`, and an
    integer hash-routing table: the layer reader places both as from_pretrained does."""
    _, planted = planted_checkpoint("deepseek_v4", tmp_path / "ckpt")
    assert run_profile(tmp_path / "ckpt", tmp_path / "mem") == [planted]
    assert run_profile(tmp_path / "ckpt", tmp_path / "stream", "--stream") == [planted]
    mem, stream = (pd.read_csv(tmp_path / r / "expert_stats.csv") for r in ("mem", "stream"))
    pd.testing.assert_frame_equal(mem, stream, rtol=1e-4)
