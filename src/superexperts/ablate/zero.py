"""`zero` mode: the expert is still routed but contributes nothing (the paper's pruning).

Its down projection slice (and down bias: GPT-OSS, Linear biases) is set to zero in place;
a clone of each slice is kept and copied back on restore, so weights return bit-for-bit.
The routing weights are untouched (paper: no renormalisation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..experts import Expert
from ..models.adapters import ModelMap


def down_slices(model_map: ModelMap, expert: Expert) -> list[torch.Tensor]:
    """Views of the parameters that make up one expert's down projection (weight, bias)."""
    layer, index = expert
    block = model_map.block(layer)
    if index == "shared" or block.layout == "modulelist":
        down = block.shared_down if index == "shared" else block.expert_down(index)
        return [t for t in (down.weight, down.bias) if t is not None]
    # fused [E, H, I] / GPT-OSS [E, I, H] / Llama4 [E, I, H]: expert is always the first dim
    slices = [block.experts.down_proj[index]]
    bias = getattr(block.experts, "down_proj_bias", None)
    if isinstance(bias, torch.Tensor):
        slices.append(bias[index])  # (H,)
    return slices


def _restorer(view: torch.Tensor, saved: torch.Tensor) -> Callable[[], None]:
    def restore() -> None:
        with torch.no_grad():
            view.copy_(saved)

    return restore


def apply_zero(model_map: ModelMap, experts: list[Expert], undo: list[Callable[[], None]], means=None) -> None:
    """Zero each expert's down projection; push one restore per slice onto `undo`."""
    with torch.no_grad():
        for expert in experts:
            for view in down_slices(model_map, expert):
                saved = view.detach().clone()
                undo.append(_restorer(view, saved))
                view.zero_()
