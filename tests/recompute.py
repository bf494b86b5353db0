"""Every routed expert recomputed with plain matmuls on the tokens it was routed: the independent
reference the capture is checked against (tests/capture, tests/models/test_registry_families.py)."""

from __future__ import annotations

import torch

from superexperts.models.adapters import map_model


def record_expert_inputs(model):
    """Pre-hooks on every routed experts module: the (hidden, routing) each one receives."""
    seen, handles = {}, []
    for b in map_model(model).moe:
        def hook(module, args, layer=b.layer):
            seen.setdefault(layer, []).append([a.detach().clone() for a in args])
        handles.append(b.experts.register_forward_pre_hook(hook))
    return seen, handles


def fused_expert_out(experts, e: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expert e on rows x written out with plain matmuls: (down_proj input, down_proj output)."""
    up_name = "gate_up_proj" if experts.has_gate else "up_proj"  # Nemotron-H: no gate, relu^2 on up_proj
    gate_up, down = getattr(experts, up_name)[e], experts.down_proj[e]
    if experts.is_transposed:  # GPT-OSS: [H, 2I] and [I, H]
        gate_up, down = gate_up.T, down.T
    h = x @ gate_up.T
    if experts.has_bias:
        h = h + getattr(experts, f"{up_name}_bias")[e]
    # the model's own activation (GPT-OSS: clamped, interleaved)
    h = experts._apply_gate(h) if experts.has_gate else experts.act_fn(h)
    out = h @ down.T
    if experts.has_bias:
        out = out + experts.down_proj_bias[e]
    return h, out


def dense_routed_out(experts, e: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gate, up = (x @ experts.gate_up_proj[e]).chunk(2, dim=-1)
    return x, (up * experts.act_fn(gate)) @ experts.down_proj[e]


def recorded_inputs(model, ids: torch.Tensor, batch_size: int) -> dict[int, list]:
    """Run the model over `ids`; {layer: [args of each experts call]}."""
    seen, handles = record_expert_inputs(model)
    with torch.no_grad():
        for batch in ids.split(batch_size):
            model(input_ids=batch, use_cache=False)
    for h in handles:
        h.remove()
    return seen


def brute_force(model, ids: torch.Tensor, batch_size: int) -> dict[tuple[int, int], tuple[float, float, int]]:
    """{(layer, expert): (max |out|, max |down input|, tokens)} over every routed token."""
    mm = map_model(model)
    seen = recorded_inputs(model, ids, batch_size)
    result = {}
    for b in mm.moe:
        for e in range(b.num_experts):
            best_out, best_in, count = 0.0, 0.0, 0
            for args in seen[b.layer]:
                if b.layout == "fused":
                    x, index = args[0], args[1]
                    rows = (index == e).any(-1)
                    h, out = fused_expert_out(b.experts, e, x[rows])
                    pairs = int((index == e).sum())  # a token routed twice to e (hash routing) runs twice
                else:
                    x = args[0].view(b.num_experts, -1, args[0].shape[-1])[e]
                    rows = x.abs().amax(-1) > 0
                    h, out = dense_routed_out(b.experts, e, x[rows])
                    pairs = int(rows.sum())
                if rows.any():
                    best_out = max(best_out, out.abs().max().item())
                    best_in = max(best_in, h.abs().max().item())
                count += pairs
            result[(b.layer, e)] = (best_out, best_in, count)
    return result
