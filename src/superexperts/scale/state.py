"""Tracker state as plain dicts of tensors: saved per layer for resume, gathered across ranks.

Merging follows what one process would have computed over the same batches in order: a later
shard only replaces an expert's maximum when strictly greater (ties keep the earlier token),
counts add, and the median sum is re-accumulated batch by batch in float32 so the result is
bit-identical to a single process. The REAP sums (`ean`, `weighted_norm_sum`) add per shard,
which rounds differently from one running sum: equal up to float rounding, not bitwise. Per-atom
statistics (capture/atoms.py) ride along under "atoms": their sums add, their maxima keep the earlier
shard's token on ties, and an expert's contributions come from the shard that holds its maximum.
"""

from __future__ import annotations

from typing import Any

import torch

from ..capture import Capture
from ..capture.tracker import ExpertTracker, MassiveTracker

State = dict[str, Any]


def _tensors(obj: object) -> State:
    return {k: v.detach().cpu().clone() for k, v in vars(obj).items() if isinstance(v, torch.Tensor)}


def expert_state(t: ExpertTracker) -> State:
    """The tracker's tensors; its per-atom statistics (when recorded) under "atoms"."""
    state = _tensors(t)
    if t.atoms is not None and t.atoms.width:
        state["atoms"] = _tensors(t.atoms)
    return state


def set_expert_state(t: ExpertTracker, state: State) -> None:
    for k, v in state.items():
        if k == "atoms":
            if t.atoms is not None:
                for name, value in v.items():
                    setattr(t.atoms, name, value.to(t.atoms.device))
                t.atoms.width = int(v["sq_sum"].shape[-1])
        else:
            setattr(t, k, v.to(getattr(t, k).device))


def merge_atom_states(out: State, s: State, better: torch.Tensor) -> State:
    """Atoms of two consecutive shards; `better`: (E,) the later shard holds the expert's maximum."""
    if not s:
        return out
    if not out:
        return {k: v.clone() for k, v in s.items()}
    merged = dict(out)
    merged["sq_sum"] = out["sq_sum"] + s["sq_sum"]  # float sums: equal to one process up to rounding
    merged["sq_max"] = torch.maximum(out["sq_max"], s["sq_max"])
    act = s["max_abs_act"] > out["max_abs_act"]  # ties keep the earlier token
    for k in ("max_abs_act", "max_act_token"):
        merged[k] = torch.where(act, s[k], out[k])
    merged["contribution"] = torch.where(better.unsqueeze(-1), s["contribution"], out["contribution"])
    merged["unweighted"] = out["unweighted"] | s["unweighted"]
    return merged


def massive_state(t: MassiveTracker, medians: list[torch.Tensor]) -> State:
    """`medians`: the per-batch median magnitudes, in batch order (the tracker only keeps their sum)."""
    return {"values": t.values.cpu(), "flat_index": t.flat_index.cpu(), "nonfinite": t.nonfinite.cpu(),
            "hidden_size": int(t.hidden_size), "medians": torch.stack(medians).cpu() if medians else torch.empty(0)}  # fmt: skip


def set_massive_state(t: MassiveTracker, state: State) -> None:
    device = t.median_sum.device
    t.values, t.flat_index = state["values"].to(device), state["flat_index"].to(device)
    t.nonfinite = state["nonfinite"].to(device)
    t.hidden_size = state["hidden_size"]
    t.batches = len(state["medians"])
    total = torch.zeros((), device=device)
    for m in state["medians"].to(device):  # the same float32 additions, in the same order
        total += m
    t.median_sum = total


def layer_state(cap: Capture, layer: int, medians: list[torch.Tensor]) -> State:
    """Everything one finished layer recorded."""
    experts = {kind: expert_state(t) for (lyr, kind), t in cap.experts.items() if lyr == layer}
    return {"experts": experts, "massive": massive_state(cap.massive[layer], medians)}


def restore_layer(cap: Capture, layer: int, state: State) -> None:
    for kind, s in state["experts"].items():
        set_expert_state(cap.experts[(layer, kind)], s)
    set_massive_state(cap.massive[layer], state["massive"])


def merge_expert_states(states: list[State]) -> State:
    """Combine trackers of consecutive shards of the batches (shard 0 first)."""
    out = {k: v.clone() for k, v in states[0].items() if k != "atoms"}
    atoms = states[0].get("atoms", {})
    for s in states[1:]:
        better = s["max_abs_output"] > out["max_abs_output"]
        atoms = merge_atom_states(atoms, s.get("atoms", {}), better)
        for k in ("max_abs_output", "max_output", "channel", "token"):
            out[k] = torch.where(better, s[k], out[k])
        out["max_abs_input"] = torch.maximum(out["max_abs_input"], s["max_abs_input"])
        out["tokens_routed"] = out["tokens_routed"] + s["tokens_routed"]
        out["nonfinite_rows"] = out["nonfinite_rows"] + s["nonfinite_rows"]
        out["max_signed_output"] = torch.maximum(out["max_signed_output"], s["max_signed_output"])
        for k in ("ean", "weighted_norm_sum"):  # float sums: equal to one process up to rounding
            out[k] = out[k] + s[k]
    if atoms:
        out["atoms"] = atoms
    return out


def merge_massive_states(states: list[State], k: int) -> State:
    """Top-k over the union of the shards' top-k; medians concatenated in batch order."""
    values = torch.cat([s["values"] for s in states])
    index = torch.cat([s["flat_index"] for s in states])
    keep = values.topk(min(k, values.numel())).indices
    return {"values": values[keep], "flat_index": index[keep],
            "nonfinite": sum(s["nonfinite"] for s in states), "hidden_size": max(s["hidden_size"] for s in states),
            "medians": torch.cat([s["medians"] for s in states])}  # fmt: skip


def merge_layer_states(states: list[State], k: int) -> State:
    kinds = states[0]["experts"].keys()
    return {"experts": {kind: merge_expert_states([s["experts"][kind] for s in states]) for kind in kinds},
            "massive": merge_massive_states([s["massive"] for s in states], k)}  # fmt: skip
