"""transformers 4.x-style MoE blocks (ModuleList experts, w1/w2/w3), as remote-code checkpoints
still ship them. `legacy_mixtral(model)` swaps every fused Mixtral block for an equivalent
legacy block with the same weights, so the two paths can be checked against each other."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LegacyExpert(nn.Module):
    def __init__(self, hidden: int, inter: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(hidden, inter, bias=False)  # gate
        self.w2 = nn.Linear(inter, hidden, bias=False)  # down
        self.w3 = nn.Linear(hidden, inter, bias=False)  # up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class LegacySparseMoeBlock(nn.Module):
    """The Mixtral block of transformers 4.51 (softmax -> top-k -> renormalise; per-expert loop)."""

    def __init__(self, fused_block: nn.Module) -> None:
        super().__init__()
        experts = fused_block.experts
        num_experts, two_inter, hidden = experts.gate_up_proj.shape
        inter = two_inter // 2
        self.top_k = fused_block.top_k
        self.gate = nn.Linear(hidden, num_experts, bias=False)
        self.experts = nn.ModuleList(LegacyExpert(hidden, inter) for _ in range(num_experts))
        with torch.no_grad():
            self.gate.weight.copy_(fused_block.gate.weight)
            for e, expert in enumerate(self.experts):
                expert.w1.weight.copy_(experts.gate_up_proj[e, :inter])
                expert.w3.weight.copy_(experts.gate_up_proj[e, inter:])
                expert.w2.weight.copy_(experts.down_proj[e])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = hidden_states.shape
        x = hidden_states.view(-1, hidden)
        logits = self.gate(x)
        weights = F.softmax(logits, dim=1, dtype=torch.float)
        weights, selected = torch.topk(weights, self.top_k, dim=-1)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype)
        final = torch.zeros_like(x)
        mask = F.one_hot(selected, num_classes=len(self.experts)).permute(2, 1, 0)
        for e, expert in enumerate(self.experts):
            idx, top_x = torch.where(mask[e])
            current = x[None, top_x].reshape(-1, hidden)
            final.index_add_(0, top_x, expert(current) * weights[top_x, idx, None])
        return final.reshape(batch, seq, hidden)


def legacy_mixtral(model: nn.Module) -> nn.Module:
    for layer in model.model.layers:
        layer.mlp = LegacySparseMoeBlock(layer.mlp)
    return model
