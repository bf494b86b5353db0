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
import transformers as tf
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from families import COMMON, build_from

FP8_MAX = 448.0  # largest finite float8_e4m3fn
BLOCK = 128
E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def fp8_quantize(w: torch.Tensor, block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 weight, float32 scale_inv [ceil(rows/block), ceil(cols/block)]) of a 2-D weight: each
    block divided by its max |w| / 448 (zero-padded to whole blocks to find the maxima)."""
    rows, cols = w.shape
    grid = (math.ceil(rows / block), math.ceil(cols / block))
    padded = torch.zeros(grid[0] * block, grid[1] * block)
    padded[:rows, :cols] = w.float()
    tiles = padded.reshape(grid[0], block, grid[1], block)
    amax = tiles.abs().amax(dim=(1, 3))
    scale_inv = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (tiles / scale_inv[:, None, :, None]).reshape(padded.shape)[:rows, :cols].to(torch.float8_e4m3fn)
    return q.contiguous(), scale_inv


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


# Tiny models with whole 128x128 blocks (Qwen3-MoE), partial edge blocks (DeepSeek-V3) and MXFP4-sized
# experts (gpt-oss), each with one planted super weight.
BIG = {"hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2}  # whole 128x128 blocks


def qwen3_fp8_model():
    config = tf.Qwen3MoeConfig(**(COMMON | BIG), head_dim=64, intermediate_size=256, moe_intermediate_size=128,
                               num_hidden_layers=4, num_experts=8, num_experts_per_tok=2, mlp_only_layers=[3])  # fmt: skip
    return _seeded(tf.Qwen3MoeForCausalLM, config, planted=(1, 5))


def deepseek_partial_model():
    """hidden 192 = 1.5 blocks, kv_a_proj_with_mqa 128 + 64 = 192 rows: partial edge blocks as in DeepSeek-V3/R1."""
    config = tf.DeepseekV3Config(**(COMMON | {"hidden_size": 192, "num_attention_heads": 2}),
                                 intermediate_size=256, moe_intermediate_size=128, num_hidden_layers=3,
                                 n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
                                 first_k_dense_replace=1, kv_lora_rank=128, q_lora_rank=128, qk_rope_head_dim=64,
                                 qk_nope_head_dim=64, v_head_dim=64, n_group=2, topk_group=1)  # fmt: skip
    return _seeded(tf.DeepseekV3ForCausalLM, config, planted=(1, 4))


def gpt_oss_model():
    """Expert dims multiples of 32 (one MXFP4 scale per 32 input values)."""
    config = tf.GptOssConfig(**(COMMON | {"hidden_size": 64}), head_dim=16, intermediate_size=64,
                             num_hidden_layers=4, num_local_experts=8, num_experts_per_tok=2, sliding_window=8,
                             layer_types=["sliding_attention", "full_attention"] * 2)  # fmt: skip
    return _seeded(tf.GptOssForCausalLM, config, planted=(1, 3))


def _seeded(cls, config, planted):
    """A random model with a super weight planted in the `planted` expert's down projection (like
    the demo's: the weights writing hidden channel 7 are 50x larger). One per model: with 24
    candidate experts, P99.5 lies between the two largest, so only the largest can pass it."""
    model = build_from(cls, config)
    with torch.no_grad():
        layer, expert = planted
        down = model.model.layers[layer].mlp.experts.down_proj  # [E, H, I]; gpt-oss [E, I, H]
        if config.model_type == "gpt_oss":
            down[expert, :, 7] *= 50
        else:
            down[expert, 7] *= 50
    return model


def in_memory(folder, quantization):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, quantization_config=quantization).eval()
