"""Export keeps FP8/MXFP4 checkpoints in their format: only the pruned experts' quantized codes are
zeroed, and they dequantize to exactly zero whatever their scales."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import FineGrainedFP8Config, Mxfp4Config
from transformers.integrations.mxfp4 import FP4_VALUES

from quantized_checkpoints import in_memory
from superexperts.models.checkpoints.export import export_pruned
from superexperts.models.checkpoints.reader import Checkpoint
from superexperts.models.checkpoints.skeleton import build_skeleton, layers_path
from superexperts.runs.errors import UserError

HUGE = 3.0e38  # a finite float32 scale: 0 x HUGE is still 0


def _tensors(folder) -> dict[str, torch.Tensor]:
    out = {}
    for path in folder.glob("*.safetensors"):
        with safe_open(path, framework="pt") as f:
            out |= {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    return out


def _raw(t: torch.Tensor) -> bytes:
    return t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def _set(folder, key, value):
    """Overwrite one tensor of a copied checkpoint (same dtype and shape)."""
    for path in folder.glob("*.safetensors"):
        with safe_open(path, framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
        if key in state:
            state[key] = value.to(state[key].dtype).expand_as(state[key]).contiguous()
            save_file(state, path, metadata={"format": "pt"})


def _streamed_layer(folder, layer):
    skeleton, _ = build_skeleton(folder, torch.float32)
    ckpt = Checkpoint.open(folder, skeleton, layers_prefix=layers_path(skeleton))
    ckpt.load(skeleton, ckpt.layer_keys[layer], device="cpu", dtype=torch.float32)
    return skeleton.model.layers[layer]


def test_zero_codes_are_positive_zero():
    fp8_zero = torch.zeros(1, dtype=torch.uint8).view(torch.float8_e4m3fn).float().item()
    assert fp8_zero == 0.0 and math.copysign(1, fp8_zero) == 1  # 0x00 in e4m3fn
    assert FP4_VALUES[0] == 0.0 and math.copysign(1, FP4_VALUES[0]) == 1  # e2m1 code 0 in transformers' table


@pytest.mark.parametrize(("fixture", "experts", "zeroed"), [
    ("qwen3_fp8", [(1, 5), (2, 0)], ["model.layers.1.mlp.experts.5.down_proj.weight",
                                     "model.layers.2.mlp.experts.0.down_proj.weight"]),
    ("deepseek_fp8", [(1, 4), (2, "shared")], ["model.layers.1.mlp.experts.4.down_proj.weight",
                                               "model.layers.2.mlp.shared_experts.down_proj.weight"]),
])  # fmt: skip
def test_fp8_export_zeroes_only_the_experts_codes(request, tmp_path, fixture, experts, zeroed):
    source = shutil.copytree(request.getfixturevalue(fixture), tmp_path / "src")
    for key in zeroed:  # the pruned experts' scales made extreme: the zeroed codes must not care
        _set(source, key + "_scale_inv", torch.tensor(HUGE))
    export_pruned(source, experts, tmp_path / "out")
    before, after = _tensors(source), _tensors(tmp_path / "out")
    assert sorted(before) == sorted(after)
    for key in before:
        if key in zeroed:
            assert after[key].dtype == torch.float8_e4m3fn and not any(_raw(after[key])), key
        else:  # scales included: every other byte as it was
            assert _raw(after[key]) == _raw(before[key]), key
    # dequantized by transformers in memory and by the streaming loader: exactly zero, the rest unchanged
    original = in_memory(source, FineGrainedFP8Config(dequantize=True)).state_dict()
    exported = in_memory(tmp_path / "out", FineGrainedFP8Config(dequantize=True))
    for layer, expert in experts:
        mlp = exported.model.layers[layer].mlp
        down = mlp.shared_experts.down_proj.weight if expert == "shared" else mlp.experts.down_proj[expert]
        assert torch.equal(down, torch.zeros_like(down))
        streamed = _streamed_layer(tmp_path / "out", layer).mlp
        down = streamed.shared_experts.down_proj.weight if expert == "shared" else streamed.experts.down_proj[expert]
        assert torch.equal(down, torch.zeros_like(down))
    changed = [k for k, v in exported.state_dict().items() if not torch.equal(v, original[k])]
    assert len(changed) == len(experts) and all("down_proj" in k for k in changed)


def test_mxfp4_export_zeroes_only_the_experts_blocks(gpt_oss_mxfp4, tmp_path):
    source = shutil.copytree(gpt_oss_mxfp4, tmp_path / "src")
    experts = [(0, 4), (3, 6)]
    scales = _tensors(source)["model.layers.3.mlp.experts.down_proj_scales"]
    scales[6] = 254  # E8M0 2^127, the largest finite scale, for one pruned expert
    _set(source, "model.layers.3.mlp.experts.down_proj_scales", scales)
    export_pruned(source, experts, tmp_path / "out")
    before, after = _tensors(source), _tensors(tmp_path / "out")
    for key in before:
        pruned = {e for layer, e in experts if key.startswith(f"model.layers.{layer}.")}
        if pruned and key.endswith(("down_proj_blocks", "down_proj_bias")):
            for e in range(before[key].shape[0]):
                if e in pruned:
                    assert not any(_raw(after[key][e])), (key, e)
                else:
                    assert _raw(after[key][e]) == _raw(before[key][e]), (key, e)
        else:
            assert _raw(after[key]) == _raw(before[key]), key
    original = in_memory(source, Mxfp4Config(dequantize=True)).state_dict()
    exported = in_memory(tmp_path / "out", Mxfp4Config(dequantize=True))
    for layer, e in experts:
        for experts_module in (exported.model.layers[layer].mlp.experts, _streamed_layer(tmp_path / "out", layer).mlp.experts):
            assert torch.equal(experts_module.down_proj[e], torch.zeros_like(experts_module.down_proj[e]))
            assert torch.equal(experts_module.down_proj_bias[e], torch.zeros_like(experts_module.down_proj_bias[e]))
    expected = {f"model.layers.{layer}.mlp.experts.{p}" for layer, _ in experts for p in ("down_proj", "down_proj_bias")}
    assert {k for k, v in exported.state_dict().items() if not torch.equal(v, original[k])} == expected


def test_export_refuses_a_missing_scale(qwen3_fp8, tmp_path):
    source = shutil.copytree(qwen3_fp8, tmp_path / "src")
    index = json.loads((source / "model.safetensors.index.json").read_text())
    key = "model.layers.1.mlp.experts.2.up_proj.weight_scale_inv"
    path = source / index["weight_map"].pop(key)
    (source / "model.safetensors.index.json").write_text(json.dumps(index))
    state = {k: v for k, v in _tensors(source).items() if k != key and index["weight_map"].get(k) == path.name}
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(UserError, match="scale .* is missing"):
        export_pruned(source, [(1, 2)], tmp_path / "out")
    assert not (tmp_path / "out").exists()
