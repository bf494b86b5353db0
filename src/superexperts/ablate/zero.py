"""`zero` mode: the expert is still routed but contributes nothing (the paper's pruning).

Its down projection slice (and down bias: GPT-OSS, Linear biases) is set to zero in place;
a clone of each slice is kept and copied back on restore, so weights return bit-for-bit.
The routing weights are untouched (paper: no renormalisation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import UserError
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
            _check_resident(model_map, expert)
            for view in down_slices(model_map, expert):
                saved = view.detach().clone()
                undo.append(_restorer(view, saved))
                view.zero_()


def _check_resident(model_map: ModelMap, expert: Expert) -> None:
    """Refuse to zero an expert whose weights accelerate offloaded (--device-map): they are
    reloaded from the offload store on every forward, so zeroing the placeholder would silently
    change nothing. (The meta skeleton of layer streaming is not tagged: its layers load later.)"""
    from ..device_map import EXECUTION_ATTR

    block = model_map.block(expert[0])
    module = block.experts if expert[1] != "shared" else block.shared
    if getattr(module, EXECUTION_ATTR, None) is not None and any(t.is_meta for t in module.parameters()):
        raise UserError(f"expert {expert[0]}:{expert[1]} is offloaded by --device-map (its weights are loaded per "
                        f"forward), so it cannot be zeroed; map layer {expert[0]} to a device, not disk/cpu offload.")
