"""`zero` mode: the expert is still routed but contributes nothing (the paper's pruning).

Its down projection slice (and down bias: GPT-OSS, Linear biases) is set to zero in place;
a copy of each slice is kept and written back on restore, so weights return bit-for-bit. Weights
offloaded by --device-map are zeroed in accelerate's offload store instead (device_map.edit_parameter,
as quant.fake does).
The routing weights are untouched (paper: no renormalisation).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from ...models.adapters import ModelMap
from ...models.device_map import edit_parameter
from ...models.experts import Expert


def down_params(model_map: ModelMap, expert: Expert) -> list[tuple[nn.Module, str, int | None]]:
    """(module, parameter name, index along dim 0 or None for all of it) of one expert's down projection
    (weight, bias)."""
    layer, index = expert
    block = model_map.block(layer)
    if index == "shared" or block.layout == "modulelist":
        down = block.shared_down if index == "shared" else block.expert_down(index)
        return [(down, name, None) for name in ("weight", "bias") if getattr(down, name) is not None]
    # fused [E, H, I] / GPT-OSS [E, I, H] / Llama4 [E, I, H]: expert is always the first dim
    params = [(block.experts, "down_proj", index)]
    if isinstance(getattr(block.experts, "down_proj_bias", None), torch.Tensor):
        params.append((block.experts, "down_proj_bias", index))  # (E, H)
    return params


def apply_zero(model_map: ModelMap, experts: list[Expert], undo: list[Callable[[], None]], means=None) -> None:
    """Zero each expert's down projection; push one restore per parameter onto `undo`. Weights offloaded
    by --device-map are zeroed where each forward loads them from (device_map.edit_parameter)."""
    with torch.no_grad():
        for expert in experts:
            for module, name, index in down_params(model_map, expert):
                stack = contextlib.ExitStack()
                edit_parameter(module, name, index, torch.zeros_like, stack)
                undo.append(stack.close)
