"""Router view: each Super Expert's routing score at the sink token vs at the other tokens.

The paper (Appendix F) finds that the router sends the first token to each SE with an
exceptionally large score, and other tokens hardly at all. The score is the router's own
probability over all experts: softmax of the logits for softmax routers (Qwen, Mixtral, OLMoE,
DeepSeek-V2, GPT-OSS), sigmoid for sigmoid routers (DeepSeek-V3, GLM4-MoE with
`e_score_correction_bias`, Llama4).

    >>> table = router_view(model, input_ids, [(1, 68), (2, 92)])
    >>> table[["layer", "expert", "sink_score", "other_mean", "other_max"]]
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from ..experts import Expert
from ..models.adapters import input_device, map_model

COLUMNS = ["layer", "expert", "scoring", "sink_score", "other_mean", "other_max", "sink_selected", "other_selected"]


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
                sink_position: int = 0) -> pd.DataFrame:
    """One row per routed expert in `experts` (shared experts have no router and are skipped)."""
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
        with torch.no_grad():
            model(input_ids=input_ids.to(input_device(model)), use_cache=False)
    return _table(routed, seen, input_ids.shape, sink_position)


def _table(routed: list[Expert], seen: dict, shape: torch.Size, sink_position: int) -> pd.DataFrame:
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
            "other_selected": float(chosen[~is_sink].mean()),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)
