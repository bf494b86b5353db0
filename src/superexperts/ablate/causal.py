"""Causal confirmation: ablate each candidate alone and measure what it does (issue 4, item 6).

A static threshold can flag many experts of which few matter (one practitioner's run flagged
158 with 5 mattering). For each candidate this measures, on a small batch:

- `ma_drop`: the relative drop of the massive activation, max |hidden| over the outputs of the
  candidate's layer and every later layer (the residual stream it writes into);
- `loss_delta`: the change of the mean next-token loss.

`causal` is `ma_drop >= threshold`. Rows are ranked by ma_drop, then loss_delta.
"""

from __future__ import annotations

import contextlib

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import UserError
from ..evaluate.perplexity import window_nll
from ..experts import Expert, validate_experts
from ..models.adapters import ModelMap, input_device, map_model
from .ablation import ablate

COLUMNS = ["rank", "layer", "expert", "ma_original", "ma_ablated", "ma_drop", "loss_original", "loss_ablated",
           "loss_delta", "causal"]  # fmt: skip


@torch.no_grad()
def measure(model: nn.Module, model_map: ModelMap, input_ids: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, float]:
    """(max |hidden| after each decoder layer (layers,), mean next-token loss) over `input_ids`."""
    layer_max = torch.zeros(model_map.num_layers)
    device = input_device(model)

    def hook(i: int):
        def record(module, args, output) -> None:
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            layer_max[i] = max(layer_max[i], hidden.detach().abs().max().float().cpu())

        return record

    nll, tokens = 0.0, 0
    with contextlib.ExitStack() as stack:
        for i, layer in enumerate(model_map.layers):
            stack.callback(layer.register_forward_hook(hook(i)).remove)
        for batch in input_ids.split(batch_size):
            batch = batch.to(device)
            nll += float(window_nll(model, batch).sum())
            tokens += batch[:, 1:].numel()
    return layer_max, nll / tokens


def confirm_candidates(
    model: nn.Module,
    input_ids: torch.Tensor,
    candidates: list[Expert],
    *,
    threshold: float = 0.5,
    mode: str = "zero",
    means=None,
    batch_size: int = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """Ablate each candidate alone; one row per candidate with its MA drop and loss change.

    >>> table = confirm_candidates(model, calib_ids[:4], [(1, 68), (2, 92), (40, 7)])
    >>> table[table.causal][["layer", "expert", "ma_drop", "loss_delta"]]
    """
    if not 0 < threshold < 1:
        raise UserError(f"causal threshold {threshold} must be in (0, 1), e.g. 0.5 for a 50% drop of the MA.")
    if input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise UserError(f"input_ids must be [samples, seq_len >= 2], got {tuple(input_ids.shape)}.")
    model_map = map_model(model)
    candidates = validate_experts(model_map, list(candidates))
    base_max, base_loss = measure(model, model_map, input_ids, batch_size)
    rows = []
    for layer, expert in tqdm(candidates, desc="causal check", disable=not progress):
        with ablate(model, [(layer, expert)], mode=mode, means=means):
            ablated_max, loss = measure(model, model_map, input_ids, batch_size)
        before, after = float(base_max[layer:].max()), float(ablated_max[layer:].max())
        rows.append({"layer": layer, "expert": expert, "ma_original": before, "ma_ablated": after,
                     "ma_drop": 1.0 - after / before if before > 0 else 0.0, "loss_original": base_loss,
                     "loss_ablated": loss, "loss_delta": loss - base_loss})  # fmt: skip
    table = pd.DataFrame(rows)
    table["causal"] = table["ma_drop"] >= threshold
    table = table.sort_values(["ma_drop", "loss_delta"], ascending=False, kind="stable").reset_index(drop=True)
    table["rank"] = range(1, len(table) + 1)
    return table[COLUMNS]


def default_candidates(expert_stats: pd.DataFrame, experts: list[Expert], top: int = 5) -> list[Expert]:
    """`experts` plus the `top` other routed/shared experts with the largest a[l,e] (profile table).

    >>> default_candidates(prof.expert_stats, [(1, 68)], top=2)
    [(1, 68), (2, 92), (3, 82)]
    """
    others = expert_stats[expert_stats["kind"] != "dense"].sort_values("max_abs_output", ascending=False)
    chosen = list(experts)
    for r in others.itertuples():
        if len(chosen) >= len(experts) + top:
            break
        expert = (int(r.layer), int(r.expert) if r.kind == "routed" else "shared")
        if expert not in chosen:
            chosen.append(expert)
    return chosen
