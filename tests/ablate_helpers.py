"""Test helpers for ablation: record one MoE block's traffic, recompute expert outputs by hand."""

from __future__ import annotations

import contextlib

import torch

from superexperts.models.adapters import MoEBlock


def first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


@contextlib.contextmanager
def record_block(block: MoEBlock):
    """Record the block's input/output (flattened to (tokens, hidden)) and its routing:
    `index`/`weights` (tokens, top_k) for routed layouts, `scores` (tokens, E) for Llama4."""
    rec: dict = {}
    h = [
        block.block.register_forward_pre_hook(lambda m, a: rec.__setitem__("x", a[0].reshape(-1, a[0].shape[-1]))),
        block.block.register_forward_hook(
            lambda m, a, o: rec.__setitem__("out", first(o).reshape(-1, first(o).shape[-1]).detach().clone())
        ),
    ]
    if block.layout == "dense_routed":
        h.append(block.router.register_forward_hook(lambda m, a, o: rec.__setitem__("scores", o[0])))
    else:
        h.append(block.experts.register_forward_pre_hook(lambda m, a: rec.update(index=a[1], weights=a[2])))
    try:
        yield rec
    finally:
        for x in h:
            x.remove()


def fused_expert_output(experts, e: int, x: torch.Tensor) -> torch.Tensor:
    """One fused expert on rows x (tokens, hidden), straight from its weights, before routing weight."""
    w, d = experts.gate_up_proj[e], experts.down_proj[e]
    transposed = getattr(experts, "is_transposed", True)  # Llama4 stores [E, in, out] too
    gu = x @ w if transposed else x @ w.T
    if getattr(experts, "has_bias", False):
        gu = gu + experts.gate_up_proj_bias[e]
    if hasattr(experts, "_apply_gate"):
        h = experts._apply_gate(gu)
    else:  # Llama4
        gate, up = gu.chunk(2, dim=-1)
        h = up * experts.act_fn(gate)
    out = h @ d if transposed else h @ d.T
    if getattr(experts, "has_bias", False):
        out = out + experts.down_proj_bias[e]
    return out


def expert_contribution(block: MoEBlock, rec: dict, e: int) -> torch.Tensor:
    """What routed expert e adds to the block output, per token (tokens, hidden)."""
    x = rec["x"]
    if block.layout == "dense_routed":
        score = rec["scores"][:, e : e + 1]  # (tokens, 1); 0 where not selected
        return fused_expert_output(block.experts, e, x * score)
    routed = rec["index"] == e  # (tokens, top_k)
    weight = (rec["weights"] * routed).sum(-1, keepdim=True)  # (tokens, 1)
    contrib = torch.zeros_like(x)
    rows = routed.any(-1)
    contrib[rows] = weight[rows] * fused_expert_output(block.experts, e, x[rows])
    return contrib


def state_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    now = model.state_dict()
    assert now.keys() == snapshot.keys()
    for k, v in snapshot.items():
        assert torch.equal(now[k], v), f"{k} changed"
