"""Checkpoints written the way quantized MoE models are published, for tests and benchmarks.

Written from the formats' definitions, not with transformers' quantizers (which the code under
test uses to read them back):

- block-wise FP8 (DeepSeek-V3/R1, Qwen3-*-FP8): every 2-D linear weight of the decoder layers
  except the router becomes float8_e4m3fn plus a float32 `weight_scale_inv` with one entry per
  128x128 block (ceil division: edge blocks are partial), value = fp8 x scale_inv; embeddings,
  norms, router and lm_head stay unquantized;
- MXFP4 (gpt-oss): each expert projection `P` [E, rows, cols] becomes `P_blocks` [E, cols, rows/32,
  16] uint8 (two e2m1 codes per byte, low nibble first) and `P_scales` [E, cols, rows/32] uint8
  (one E8M0 exponent per 32 values, biased by 127), in the transposed layout gpt-oss ships.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

FP8_MAX = 448.0  # largest finite float8_e4m3fn
BLOCK = 128
E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def fp8_quantize(w: torch.Tensor, block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 weight, float32 scale_inv [ceil(rows/block), ceil(cols/block)]) of a 2-D weight."""
    rows, cols = w.shape
    grid = (math.ceil(rows / block), math.ceil(cols / block))
    scale_inv = torch.empty(grid, dtype=torch.float32)
    q = torch.empty(rows, cols, dtype=torch.float8_e4m3fn)
    w = w.float()
    for i in range(grid[0]):
        for j in range(grid[1]):
            tile = w[i * block : (i + 1) * block, j * block : (j + 1) * block]
            amax = tile.abs().max().item()
            s = amax / FP8_MAX if amax > 0 else 1.0
            scale_inv[i, j] = s
            q[i * block : (i + 1) * block, j * block : (j + 1) * block] = (tile / s).to(torch.float8_e4m3fn)
    return q, scale_inv


def fp8_dequantize(q: torch.Tensor, scale_inv: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """float32 value of an fp8 weight: each element times its block's scale_inv."""
    rows, cols = q.shape
    s = scale_inv.repeat_interleave(block, 0)[:rows].repeat_interleave(block, 1)[:, :cols]
    return q.float() * s


def is_fp8_target(key: str, tensor: torch.Tensor) -> bool:
    """Quantized in published FP8 checkpoints: 2-D weights inside the decoder layers but the router."""
    return tensor.dim() == 2 and ".layers." in key and key.endswith(".weight") and not key.endswith("mlp.gate.weight")


def fp8_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A hub-layout state dict in block-wise FP8 (other tensors in bf16, as published)."""
    out = {}
    for key, t in state.items():
        if is_fp8_target(key, t):
            out[key], out[key.removesuffix("weight") + "weight_scale_inv"] = fp8_quantize(t)
        else:
            out[key] = t.to(torch.bfloat16).contiguous()
    return out


FP8_CONFIG = {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "weight_block_size": [128, 128]}


def write_fp8(model, folder: Path) -> Path:
    """`model` saved (hub layout), then rewritten shard by shard in block-wise FP8."""
    model.save_pretrained(folder)
    return fp8_copy(folder, folder)


def fp8_copy(source: Path, target: Path) -> Path:
    """A block-wise FP8 copy of a bf16/fp32 safetensors checkpoint folder, one shard at a time
    (tokenizer and other files copied as they are)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and path.name != "config.json" and source != target:
            shutil.copyfile(path, target / path.name)
    weight_map = {}
    for shard in sorted(source.glob("*.safetensors")):
        with safe_open(shard, framework="pt") as f:
            state = fp8_state({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118 - safe_open is not a dict
        save_file(state, target / shard.name, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(state, shard.name)
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = FP8_CONFIG
    (target / "config.json").write_text(json.dumps(config, indent=2))
    if (source / "model.safetensors.index.json").is_file():
        index = {"metadata": {}, "weight_map": weight_map}
        (target / "model.safetensors.index.json").write_text(json.dumps(index))
    return target


def mxfp4_quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(blocks uint8 [..., n/32, 16], scales uint8 [..., n/32]) of w [..., n]: per 32 values a
    power-of-two scale so the largest fits e2m1's 6.0, each value rounded to the nearest code."""
    *lead, n = w.shape
    groups = w.float().reshape(*lead, n // 32, 32)
    amax = groups.abs().amax(-1)
    exp = torch.where(amax > 0, torch.ceil(torch.log2(amax / 6.0)), torch.zeros_like(amax)).clamp(-127, 127)
    scaled = groups / torch.exp2(exp)[..., None]
    codes = (scaled[..., None] - E2M1).abs().argmin(-1).to(torch.uint8)  # nearest of the 16 codes
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return packed.contiguous(), (exp + 127).to(torch.uint8).contiguous()


def mxfp4_dequantize(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """float32 [..., n] from blocks [..., n/32, 16] and scales [..., n/32]."""
    codes = torch.stack([blocks & 0x0F, blocks >> 4], -1).reshape(*blocks.shape[:-1], 32).long()
    values = E2M1[codes] * torch.exp2(scales.float() - 127)[..., None]
    return values.reshape(*blocks.shape[:-2], -1)


MXFP4_CONFIG = {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                                  "model.embed_tokens", "lm_head"]}  # fmt: skip


def write_mxfp4(model, folder: Path) -> Path:
    """A gpt-oss model saved with its experts' projections in MXFP4 (the rest bf16), as published."""
    folder.mkdir(parents=True)
    state = {}
    for key, t in model.state_dict().items():
        if key.endswith(("experts.gate_up_proj", "experts.down_proj")):
            # model [E, in, out] -> shipped [E, out, in/32, 16]: groups of 32 along the input dim
            state[f"{key}_blocks"], state[f"{key}_scales"] = mxfp4_quantize(t.transpose(1, 2))
        elif "rotary" not in key:
            state[key] = t.to(torch.bfloat16).contiguous()
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    model.config.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text()) | {"quantization_config": MXFP4_CONFIG}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder
