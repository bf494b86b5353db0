"""The routing weights a ModuleList MoE block applies, read from its router's output.

Fused experts receive their weights as an argument (`experts_fn`); legacy and remote-code
blocks multiply them in their own forward, where no hook sees them. Two router outputs are
understood, everything else gives None (REAP saliency is then NaN, never a guess):

- a tuple holding (indices [tokens, k] int, weights [tokens, k] float): DeepSeek's remote-code
  `MoEGate`, whose weights already include its scaling factor;
- router logits [tokens, E] from a Linear gate: softmax over experts, top-k, renormalised over
  the k unless the block has `norm_topk_prob = False` (transformers 4.x Mixtral always
  renormalises; Qwen2/3-MoE and OLMoE follow their flag).
"""

from __future__ import annotations

import torch
from torch import nn


def _top_k(block: nn.Module) -> int | None:
    for name in ("top_k", "num_experts_per_tok"):
        value = getattr(block, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def routing_weights(block: nn.Module, router_output, num_experts: int) -> torch.Tensor | None:
    """Dense (tokens, E) weights, zero where an expert was not selected; None when unknown."""
    if isinstance(router_output, (tuple, list)):
        tensors = [t for t in router_output if isinstance(t, torch.Tensor) and t.dim() == 2]
        index = next((t for t in tensors if not t.is_floating_point()), None)
        weight = next((t for t in tensors if t.is_floating_point() and index is not None and t.shape == index.shape),
                      None)  # fmt: skip
        if index is None or weight is None:
            return None
        return torch.zeros(index.shape[0], num_experts, device=weight.device).scatter_(1, index, weight.float())
    top_k = _top_k(block)
    if not isinstance(router_output, torch.Tensor) or router_output.shape[-1] != num_experts or top_k is None:
        return None
    probs = torch.softmax(router_output.reshape(-1, num_experts).float(), dim=-1)  # (tokens, E)
    values, index = probs.topk(top_k, dim=-1)
    if getattr(block, "norm_topk_prob", True):
        values = values / values.sum(dim=-1, keepdim=True)
    return torch.zeros_like(probs).scatter_(1, index, values)
