"""`skip` mode: the expert is removed from routing; top-k picks another expert instead.

Routers in transformers 5.x compute their logits with `F.linear` inside `forward` and pick
experts with `torch.topk`, sometimes in the MoE block (legacy ModuleList blocks). A
`TorchFunctionMode`, entered by a forward pre-hook of the MoE block and left by its forward
hook (`always_call`, so also on exceptions), adds -inf to the skipped columns of

- the first `F.linear` output of width num_experts inside the router (the logits): softmax
  then gives the skipped experts probability 0 and the others are renormalised as the model
  normally does;
- every `topk` input of width num_experts inside the block: sigmoid routers with a score
  correction bias (DeepSeek-V3, GLM4-MoE) would otherwise still rank a 0-score expert.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ...models.adapters import ModelMap, MoEBlock
from ...models.experts import Expert
from ...runs.errors import UserError

_TOPK = (torch.topk, torch.Tensor.topk)


class RoutingMask(TorchFunctionMode):
    """Masks `skipped` experts out of one MoE block's routing while the block runs."""

    def __init__(self, block: MoEBlock, skipped: list[int]) -> None:
        super().__init__()
        self.layer, self.num_experts = block.layer, block.num_experts
        self.skipped = sorted(skipped)
        self.in_router = False
        self.masked_logits = False

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point() or x.shape[-1] != self.num_experts:
            return x
        cols = torch.zeros(self.num_experts, dtype=torch.bool, device=x.device)
        cols[self.skipped] = True
        return x.masked_fill(cols, float("-inf"))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _TOPK and isinstance(args[0], torch.Tensor):
            dim = kwargs.get("dim", args[2] if len(args) > 2 else -1)
            if dim in (-1, args[0].dim() - 1):
                args = (self._mask(args[0]), *args[1:])
        out = func(*args, **kwargs)
        if func is F.linear and self.in_router and not self.masked_logits and out.shape[-1] == self.num_experts:
            self.masked_logits = True
            out = self._mask(out)
        return out


def _top_k(block: MoEBlock) -> int:
    for owner in (block.router, block.block, getattr(block.experts, "config", None)):
        for name in ("top_k", "num_experts_per_tok"):
            if isinstance(getattr(owner, name, None), int):
                return getattr(owner, name)
    return 1


def _install(block: MoEBlock, skipped: list[int], undo: list[Callable[[], None]]) -> None:
    mask = RoutingMask(block, skipped)

    def enter(module, args):
        mask.in_router = mask.masked_logits = False
        mask.__enter__()

    def leave(module, args, output):
        mask.__exit__(None, None, None)
        if not mask.masked_logits:
            raise UserError(
                f"--mode skip: no router logits of width {block.num_experts} found in layer {block.layer}; "
                "this router is not supported, use --mode zero or mean."
            )

    def router_in(module, args):
        mask.in_router = True

    def router_out(module, args, output):
        mask.in_router = False

    handles = [
        block.block.register_forward_pre_hook(enter),
        block.block.register_forward_hook(leave, always_call=True),
        block.router.register_forward_pre_hook(router_in),
        block.router.register_forward_hook(router_out, always_call=True),
    ]
    undo.extend(h.remove for h in handles)


def apply_skip(model_map: ModelMap, experts: list[Expert], undo: list[Callable[[], None]], means=None) -> None:
    """Mask each expert out of its layer's routing; push the hook removals onto `undo`."""
    per_layer: dict[int, list[int]] = {}
    for layer, expert in experts:
        if expert == "shared":
            raise UserError(f"--mode skip cannot remove {layer}:shared: shared experts are not routed; "
                            "use --mode zero or mean.")
        per_layer.setdefault(layer, []).append(int(expert))
    for layer, skipped in per_layer.items():
        block = model_map.block(layer)
        if block.router is None:
            raise UserError(f"--mode skip: layer {layer} has no router module; use --mode zero or mean.")
        if block.num_experts - len(skipped) < _top_k(block):
            raise UserError(f"--mode skip: layer {layer} would keep {block.num_experts - len(skipped)} experts, "
                            f"fewer than its top-k {_top_k(block)}; skip fewer experts.")
    for layer, skipped in per_layer.items():
        _install(model_map.block(layer), skipped, undo)
