"""Stand-ins for issue 20's atom producers (CAMERA scores, super atoms), computed by hand in the tests
from each MoE block's recorded input and routing, so the consumers (atom pruning plans, prune-eval,
quant-eval, protect) can be tested end to end before the profile records atom statistics."""

from __future__ import annotations

import contextlib

import pandas as pd
import torch
import torch.nn.functional as F

from ablate_helpers import record_block
from superexperts.models.adapters import map_model


@torch.no_grad()
def _routed_activations(model, ids):
    """{(layer, expert): (a (tokens, I), r (tokens,), down (H, I))} of every routed expert of a
    concatenated-halves fused model (Qwen3-MoE, the demo): a = silu(gate x) * (up x), r its routing weight."""
    mm = map_model(model)
    with contextlib.ExitStack() as stack:
        recs = [(b, stack.enter_context(record_block(b))) for b in mm.moe]
        model(ids)
    out = {}
    for block, rec in recs:
        gu, down = block.experts.gate_up_proj, block.experts.down_proj
        inter = down.shape[-1]
        for e in range(block.num_experts):
            routed = rec["index"] == e  # (tokens, top_k)
            rows = routed.any(-1)
            x, r = rec["x"][rows], (rec["weights"] * routed).sum(-1)[rows]
            a = F.silu(x @ gu[e, :inter].T) * (x @ gu[e, inter:].T)
            out[(block.layer, e)] = (a, r, down[e])
    return out


@torch.no_grad()
def camera_scores_by_hand(model, ids, rho: float = 0.9) -> pd.DataFrame:
    """CAMERA's score per routed atom: ||w_k||^2 ((1 - rho) sum_t (r a)^2 + rho max_t (r a)^2), routed tokens only."""
    rows = []
    for (layer, e), (a, r, down) in _routed_activations(model, ids).items():
        energy = (r[:, None] * a) ** 2  # (tokens, I)
        norms = (down**2).sum(0)  # (I,) ||w_k||^2
        total = energy.sum(0) if len(a) else torch.zeros_like(norms)
        peak = energy.max(0).values if len(a) else torch.zeros_like(norms)
        score = norms * ((1 - rho) * total + rho * peak)
        rows += [{"layer": layer, "expert": e, "kind": "routed", "atom": k, "score": float(s)} for k, s in enumerate(score)]
    return pd.DataFrame(rows)


@torch.no_grad()
def super_atoms_by_hand(model, ids, expert, cover: float = 0.9) -> list[dict]:
    """The fewest atoms whose contributions a[t*,k] w_k[c*] cover `cover` of the expert's largest |output|."""
    a, _, down = _routed_activations(model, ids)[expert]
    out = a @ down.T  # (tokens, H)
    t, c = divmod(int(out.abs().argmax()), out.shape[1])
    contrib = a[t] * down[c]  # (I,)
    order = torch.argsort(contrib.abs(), descending=True)
    chosen, covered = [], 0.0
    for k in order.tolist():
        chosen.append({"atom": k, "share": float(contrib[k] / out[t, c])})
        covered += float(contrib[k] / out[t, c])
        if covered >= cover:
            break
    return chosen
