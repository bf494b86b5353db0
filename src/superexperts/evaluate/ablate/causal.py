"""Causal confirmation: ablate each candidate alone and measure, layer by layer, what it does (issue 12).

A static threshold can flag many experts of which few matter (one practitioner's run flagged
158 with 5 mattering). For each candidate (l, e) this records, after every decoder layer j and on
a small batch, for the original model and with the candidate ablated:

- `max |h|`: the layer's largest |hidden| (over tokens and channels);
- `channel c`: the largest |hidden| in the channel c the candidate writes, i.e. the channel whose
  peak after its own layer l falls most when it is ablated.

With v[j], v'[j] the channel-c peak after layer j (original, ablated) and removed[j] = v[j] - v'[j]:

    causal  <=>  removed[l] is itself a massive activation (Sun et al. 2024: > 100 and > 1000 x the
                 layer's median |h|)                                  -- the expert writes an MA
            and  removed[l+1] >= threshold x removed[l]               -- the residual stream carries it on
    causal_layers = l and every later j with removed[j] >= threshold x removed[l]

Why per layer and per channel: a model-wide max |h| over layers >= l (the previous measure, kept as
`ma_*` for comparison) is masked by any larger activation elsewhere - a late, independent outlier
of 9,000 hid a three-step chain of 426 -> 966 -> 1,710 completely. Judged at the candidate's own
layer and channel, an earlier chain cannot be masked, and a late outlier's own effect shows only in
its own layers. Why the removed amount, not the relative drop: in an additive chain each SE adds to
what the previous ones wrote (Qwen3-30B-A3B's third SE adds 43% of the final MA), so a relative
threshold would reject later SEs; the removed amount is compared with the literature's absolute
criterion instead. Why "carried on": massive activations matter because later layers read them
(the attention sinks form there); a value no later layer carries - written in the last layer, or
cancelled at once - is reported at its own layer but is not the Super-Expert mechanism.
`channel_drop` (1 - v'/v per layer) shows how much of each layer's activation depends on the
candidate: 100% all along in a multiplicative chain, the candidate's share in an additive one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ...capture.profile import flag_massive
from ...capture.tracker import lower_median_
from ...models.adapters import ModelMap, input_device, map_model
from ...models.experts import Expert, validate_experts
from ...runs.errors import UserError
from ..perplexity import window_nll
from .ablation import ablate

COLUMNS = ["rank", "layer", "expert", "ma_original", "ma_ablated", "ma_drop", "loss_original", "loss_ablated",
           "loss_delta", "causal", "causal_layers", "channel", "removed", "own_original", "own_ablated",
           "own_drop", "massive_own", "meaningful", "reason", "max_original", "max_ablated", "max_drop",
           "channel_original", "channel_ablated", "channel_drop"]  # fmt: skip
DEFINITION = (
    "causal = ablating the candidate removes a massive activation (> 100 and > 1000 x the layer's median "
    "|h|) from the channel it writes, at its own layer's output, and at least {threshold:.0%} of that "
    "removed value is still missing one layer later; causal layers = its own layer and every later layer where "
    "at least {threshold:.0%} is still missing. channel = the channel whose peak |h| after its own layer "
    "falls most when it is ablated; channel_drop per layer = 1 - ablated/original peak in that channel."
)
LEGACY = "ma_drop = 1 - max|hidden| over the candidate's layer and all later ones (ablated / original); " \
         "maskable by any larger activation elsewhere, not used for the verdict"  # fmt: skip
MEDIAN = "median |h| per layer = mean over the batches of each batch's median |h|"


@dataclass
class Peaks:
    """What one pass over the windows records (all on the CPU at the end)."""

    channel_max: torch.Tensor  # (layers, hidden): max over tokens of |h| in each channel, after each layer
    median: torch.Tensor | None  # (layers,): mean over batches of the batch's median |h| (when asked)
    loss: float  # mean next-token loss


@torch.no_grad()
def measure_peaks(model: nn.Module, model_map: ModelMap, input_ids: torch.Tensor, batch_size: int, *,
                  medians: bool = False) -> Peaks:
    """Per-channel peaks |h| after every decoder layer, the layers' median |h| and the mean loss."""
    device = input_device(model)
    peaks: list[torch.Tensor | None] = [None] * model_map.num_layers
    median_sum = torch.zeros(model_map.num_layers, dtype=torch.float64)

    def hook(i: int):
        def record(module, args, output) -> None:
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            flat = hidden.detach().reshape(-1, hidden.shape[-1]).abs().float()  # (tokens, hidden)
            flat = flat.nan_to_num(nan=0.0, posinf=float("inf"))  # a NaN must not hide every value
            peak = flat.amax(0)
            peaks[i] = peak if peaks[i] is None else torch.maximum(peaks[i], peak)
            if medians:
                median_sum[i] += float(lower_median_(flat.reshape(-1)))  # flat's last use: reordered

        return record

    nll, tokens, batches = 0.0, 0, 0
    with contextlib.ExitStack() as stack:
        for i, layer in enumerate(model_map.layers):
            stack.callback(layer.register_forward_hook(hook(i)).remove)
        for batch in input_ids.split(batch_size):
            batch = batch.to(device)
            nll += float(window_nll(model, batch).sum())
            tokens += batch[:, 1:].numel()
            batches += 1
    channel_max = torch.stack([p.cpu() for p in peaks])  # type: ignore[union-attr]
    return Peaks(channel_max, (median_sum / batches).float() if medians else None, nll / tokens)


def _ratio_drop(before: float, after: float) -> float:
    return 1.0 - after / before if before > 0 else 0.0


def layer_span(layers: list[int]) -> str:
    """[1, 2, 3] -> '1-3'; anything not contiguous as the list."""
    return f"{layers[0]}-{layers[-1]}" if layers == list(range(layers[0], layers[-1] + 1)) else str(layers)


def judge(layer: int, original: Peaks, ablated: Peaks, threshold: float) -> dict:
    """The per-layer evidence and the verdict for one candidate of `layer` (see the module docstring)."""
    num_layers = original.channel_max.shape[0]
    falls = original.channel_max[layer] - ablated.channel_max[layer]  # (hidden,)
    max_o, max_a = original.channel_max.amax(1), ablated.channel_max.amax(1)  # (layers,)
    row = {"max_original": max_o.tolist(), "max_ablated": max_a.tolist(),
           "max_drop": [_ratio_drop(o, a) for o, a in zip(max_o.tolist(), max_a.tolist())],
           "ma_original": float(max_o[layer:].max()), "ma_ablated": float(max_a[layer:].max())}  # fmt: skip
    row["ma_drop"] = _ratio_drop(row["ma_original"], row["ma_ablated"])
    removed = float(falls.max())
    if not removed > 0:
        return row | {"channel": None, "removed": 0.0, "own_original": None, "own_ablated": None,
                      "own_drop": 0.0, "massive_own": False, "meaningful": False, "causal": False,
                      "causal_layers": [], "channel_original": None, "channel_ablated": None,
                      "channel_drop": None,
                      "reason": "no effect at its own layer on these windows (not routed to, or zero "
                      "output): the check says nothing about it; try more or other windows"}  # fmt: skip
    c = int(falls.argmax())
    v, v_abl = original.channel_max[:, c].tolist(), ablated.channel_max[:, c].tolist()
    gone = [o - a for o, a in zip(v, v_abl)]
    median = float(original.median[layer]) if original.median is not None else 0.0
    massive = bool(flag_massive(pd.DataFrame({"top1_abs": [removed], "median_abs": [median]})).iloc[0])
    carried = [j for j in range(layer + 1, num_layers) if gone[j] >= threshold * removed]
    causal = massive and layer + 1 in carried
    if not massive:
        reason = (f"removes {removed:.4g} from channel {c} at layer {layer}: not a massive activation "
                  f"(> 100 and > 1000 x the median |h| {median:.3g})")  # fmt: skip
    elif layer == num_layers - 1:
        reason = (f"writes a massive activation ({removed:.4g}, channel {c}) in the last layer: no later "
                  "layer carries it")  # fmt: skip
    elif not causal:
        reason = (f"writes a massive activation ({removed:.4g}, channel {c}) at layer {layer}, but less than "
                  f"{threshold:.0%} of it is still missing at layer {layer + 1}: not carried on")  # fmt: skip
    else:
        reason = f"writes {removed:.4g} into channel {c}; still missing in layers {layer_span(carried)}"
    return row | {
        "channel": c, "removed": removed, "own_original": v[layer], "own_ablated": v_abl[layer],
        "own_drop": _ratio_drop(v[layer], v_abl[layer]), "massive_own": massive, "meaningful": True,
        "causal": causal, "causal_layers": [layer, *carried] if causal else [], "reason": reason,
        "channel_original": v, "channel_ablated": v_abl,
        "channel_drop": [_ratio_drop(o, a) for o, a in zip(v, v_abl)],
    }  # fmt: skip


def caveats(table: pd.DataFrame, original: Peaks, windows: int) -> list[str]:
    """Plain-language limits of the check on these windows (shown next to the verdicts)."""
    notes = []
    median = original.median if original.median is not None else torch.zeros(original.channel_max.shape[0])
    layers = pd.DataFrame({"top1_abs": original.channel_max.amax(1).numpy(), "median_abs": median.numpy()})
    if not flag_massive(layers).any():
        notes.append(f"the original model has no massive activation (> 100 and > 1000 x median |h|) on these "
                     f"{windows} windows, so no candidate can be causal; use windows that start with the "
                     "model's first token (BOS), longer windows, or check the model")  # fmt: skip
    idle = [f"{r.layer}:{r.expert}" for r in table.itertuples() if not r.meaningful]
    if idle:
        notes.append(f"{', '.join(idle)} had no effect on these {windows} windows (never routed to?): their "
                     "verdict is not meaningful; try more or other windows")  # fmt: skip
    return notes


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
    """Ablate each candidate alone; one row per candidate with its per-layer evidence and verdict.

    `table.attrs` holds what all rows share: the layers' median |h| and the check's caveats.

    >>> table = confirm_candidates(model, calib_ids[:4], [(1, 68), (2, 92), (40, 7)])
    >>> table[table.causal][["layer", "expert", "channel", "removed", "causal_layers"]]
    """
    if not 0 < threshold < 1:
        raise UserError(f"causal threshold {threshold} must be in (0, 1), e.g. 0.5: at least half of what "
                        "the expert writes must still be missing a layer later.")  # fmt: skip
    if input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise UserError(f"input_ids must be [samples, seq_len >= 2], got {tuple(input_ids.shape)}.")
    model_map = map_model(model)
    candidates = validate_experts(model_map, list(candidates))
    base = measure_peaks(model, model_map, input_ids, batch_size, medians=True)
    rows = []
    for layer, expert in tqdm(candidates, desc="causal check", disable=not progress):
        with ablate(model, [(layer, expert)], mode=mode, means=means):
            ablated = measure_peaks(model, model_map, input_ids, batch_size)
        rows.append({"layer": layer, "expert": expert, **judge(layer, base, ablated, threshold),
                     "loss_original": base.loss, "loss_ablated": ablated.loss,
                     "loss_delta": ablated.loss - base.loss})  # fmt: skip
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "rank"])
    table["channel"] = pd.Series([r["channel"] for r in rows], dtype=object)  # None stays None, not NaN
    table = table.sort_values(["causal", "removed", "loss_delta"], ascending=False, kind="stable")
    table = table.reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    table.attrs = {"median_original": base.median.tolist(), "caveats": caveats(table, base, len(input_ids)),
                   "definition": DEFINITION.format(threshold=threshold), "legacy": LEGACY, "median": MEDIAN}
    return table


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
