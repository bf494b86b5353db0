"""Router view: each Super Expert's routing score where it fires, at the sink token, and elsewhere.

The paper (Appendix F) finds that the router sends the first token to each SE with an
exceptionally large score, and other tokens hardly at all. But an SE does not always fire at the
first token (some write their outlier at a delimiter), so the score is also read where the SE
fires on this input: the token where its down_proj output is largest (measured in the same
forward by the profiler's capture, before the routing weight, as a[l,e] is). The score is the
router's own probability over all experts: softmax of the logits for softmax routers (Qwen,
Mixtral, OLMoE, DeepSeek-V2, GPT-OSS), sigmoid for sigmoid routers (DeepSeek-V3, GLM4-MoE with
`e_score_correction_bias`, Llama4).

    >>> table = router_view(model, input_ids, [(1, 68), (2, 92)])
    >>> table[["layer", "expert", "fire_position", "fire_score", "sink_score", "other_mean", "other_max"]]
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from ...capture import capture
from ...capture.profile import expert_table
from ...models.adapters import input_device, map_model
from ...models.experts import Expert

COLUMNS = ["layer", "expert", "scoring", "sink_score", "other_mean", "other_max", "sink_selected",
           "other_selected", "fire_sample", "fire_position", "fire_token_id", "fire_token", "fire_output",
           "fire_score", "fire_selected"]  # fmt: skip


def _logits_and_indices(router: nn.Module, output) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(tokens, experts) logits and (tokens, k) selected indices from a router's forward output."""
    if isinstance(output, torch.Tensor):  # a bare Linear gate (ModuleList models)
        return output, None
    if len(output) == 2:  # Llama4: (scores, logits)
        return output[1], None
    return output[0], output[2]  # transformers 5.x: (logits, top-k weights, top-k indices)


def _scoring(router: nn.Module, output) -> str:
    sigmoid = hasattr(router, "e_score_correction_bias") or (isinstance(output, tuple) and len(output) == 2)
    return "sigmoid" if sigmoid else "softmax"


def router_view(model: nn.Module, input_ids: torch.Tensor, experts: Sequence[Expert],
                sink_position: int = 0, tokenizer=None) -> pd.DataFrame:
    """One row per routed expert in `experts` (shared experts have no router and are skipped).

    `sink_*`: at `sink_position` of every sample; `other_*`: every other token; `fire_*`: at the
    (sample, position) where the expert's output is largest on `input_ids` (NaN / -1 when no token
    was routed to it). `*_selected`: share of those tokens whose top-k holds the expert (NaN for
    routers that return no top-k indices, e.g. Llama4)."""
    mm = map_model(model)
    routed = [(layer, e) for layer, e in experts if e != "shared"]
    seen: dict[int, tuple[str, torch.Tensor, torch.Tensor | None]] = {}

    def hook(layer: int):
        def record(module: nn.Module, args: tuple, output) -> None:
            logits, indices = _logits_and_indices(module, output)
            how = _scoring(module, output)
            scores = logits.float().sigmoid() if how == "sigmoid" else logits.float().softmax(-1)
            seen[layer] = (how, scores.detach(), None if indices is None else indices.detach())

        return record

    with contextlib.ExitStack() as stack:
        for layer in sorted({layer for layer, _ in routed}):
            router = mm.block(layer).router
            if router is not None:
                stack.callback(router.register_forward_hook(hook(layer)).remove)
        cap = stack.enter_context(capture(mm))
        cap.start_batch(0, input_ids.shape)
        with torch.no_grad():
            model(input_ids=input_ids.to(input_device(model)), use_cache=False)
    fires = expert_table(cap, input_ids.cpu(), tokenizer)
    return _table(routed, seen, input_ids.shape, sink_position, fires[fires["kind"] == "routed"])


def _fire(fires: pd.DataFrame, layer: int, e: int, t: int, scores: torch.Tensor,
          chosen: torch.Tensor) -> dict:  # fmt: skip
    """The fire_* columns of one expert: where its output is largest, and the router there."""
    match = fires[(fires["layer"] == layer) & (fires["expert"] == e)]
    if match.empty or int(match.iloc[0]["position"]) < 0:  # never routed on this input
        nan = float("nan")
        return {"fire_sample": -1, "fire_position": -1, "fire_token_id": -1, "fire_token": "",
                "fire_output": nan, "fire_score": nan, "fire_selected": nan}  # fmt: skip
    r = match.iloc[0]
    flat = int(r["sample"]) * t + int(r["position"])  # row of the flattened (batch * T) router input
    return {"fire_sample": int(r["sample"]), "fire_position": int(r["position"]),
            "fire_token_id": int(r["token_id"]), "fire_token": str(r["token_text"]),
            "fire_output": float(r["max_abs_output"]), "fire_score": float(scores[flat]), "fire_selected": float(chosen[flat])}  # fmt: skip


def _table(routed: list[Expert], seen: dict, shape: torch.Size, sink_position: int,
           fires: pd.DataFrame) -> pd.DataFrame:
    batch, t = shape
    is_sink = torch.zeros(batch, t, dtype=torch.bool)
    is_sink[:, sink_position] = True
    is_sink = is_sink.reshape(-1)
    rows = []
    for layer, e in routed:
        if layer not in seen:
            continue
        how, scores, indices = seen[layer]
        s = scores[:, e].cpu()  # (batch * T,)
        chosen = (indices == e).any(-1).cpu().float() if indices is not None else torch.full_like(s, float("nan"))
        rows.append({
            "layer": layer, "expert": e, "scoring": how,
            "sink_score": float(s[is_sink].mean()), "other_mean": float(s[~is_sink].mean()),
            "other_max": float(s[~is_sink].max()), "sink_selected": float(chosen[is_sink].mean()),
            "other_selected": float(chosen[~is_sink].mean()), **_fire(fires, layer, e, t, s, chosen),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)
