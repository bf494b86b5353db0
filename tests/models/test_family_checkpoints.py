"""Hybrid, multi-stream and vision-language MoE families end to end: a tiny checkpoint of each, with one
Super Expert planted (one down_proj column scaled, as tests/evaluate/ablate/planted.py plants super
weights), is loaded by `superexperts profile` (vision-language ones through AutoModelForImageTextToText,
calibrated on text) and the planted expert is the one found."""

from __future__ import annotations

import json

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


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_planted_super_expert_is_found(name, tmp_path, capsys):
    family = registry.family(name)
    model = registry.build(family)
    tokenizer = families.char_tokenizer()
    ids = tokenizer(["The quick brown fox jumps", "over the lazy dog again"]).input_ids
    layer, expert = plant(model, torch.tensor([i[:16] for i in ids]))
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "run"
    code = main(["profile", str(tmp_path / "ckpt"), "--out", str(out), "--seq-len", "16", "--samples", "4",
                 "--device", "cpu", "--no-report"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    found = json.loads((out / "super_experts.json").read_text())["super_experts"]
    assert [(r["layer"], r["expert"]) for r in found] == [(layer, expert)]
    meta = json.loads((out / "profile.json").read_text())
    vision_language = family.mapping == "image_text_to_text"
    assert ("calibration_modality" in json.dumps(meta)) == vision_language
    if vision_language:
        assert "profiles its language model on text only" in capsys.readouterr().err
