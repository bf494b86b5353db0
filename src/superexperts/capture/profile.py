"""`profile(model, input_ids)`: the calibration pass -> expert and layer tables."""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..models.adapters import ModelMap, input_device, map_model
from ..runs.errors import UserError, library_failure
from . import Capture, capture
from .batching import parse_batch_size, resolve_batch_size
from .tracker import MassiveTracker

# What layer_stats holds exactly and what it estimates (capture.tracker.MassiveTracker), for profile.json.
LAYER_STATS_METHOD = {
    "top_k": "exact: the k largest |h| over every element of every batch, with token and channel "
             "(per-token maxima, then the top k within the k largest tokens)",
    "nonfinite": "exact: count of NaN/inf elements (ranked as 0)",
    "median_abs": f"estimated: mean over batches of the median |h| of a strided sample of at most "
                  f"{MassiveTracker.MEDIAN_SAMPLE} elements per batch (stride coprime with the hidden size); "
                  "exact per batch when a batch has at most that many elements",
}  # fmt: skip

EXPERT_COLUMNS = [
    "layer", "expert", "kind", "max_abs_output", "max_output", "channel", "sample", "position",
    "token_id", "token_text", "max_abs_input", "tokens_routed", "nonfinite_rows",
    "max_signed_output", "reap_saliency", "ean",
]  # fmt: skip


ATOM_COLUMNS = [
    "layer", "expert", "kind", "atom", "camera_sum", "camera_max", "max_abs_act", "max_act_sample",
    "max_act_position", "contribution",
]  # fmt: skip


def empty_atom_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object" if c == "kind" else "float64") for c in ATOM_COLUMNS})


@dataclass
class Profile:
    """Statistics of one calibration pass.

    expert_stats: one row per (layer, expert) with `kind` routed | shared | dense (expert -1
    for shared and dense); max_abs_output is the paper's a[l,e]; max_signed_output, reap_saliency
    (mean routing weight x ||output||_2, NaN without a routing weight) and ean (sum of ||output||_2)
    are REAP's criteria (capture/tracker.py).
    layer_stats: one row per decoder layer output (hidden state), top-k |h| and median |h|.
    `median_abs` is the mean over calibration batches of each batch's median |h| (torch's lower
    median, on a strided subsample when a batch holds more than 2^20 values), not the median over
    all tokens at once: exact for one batch, within ~1% of the global median on the test models.
    atom_stats: one row per atom (intermediate unit) of every routed and shared expert (capture/atoms.py):
    camera_sum = ||w_k||^2 sum_t (r a)^2 and camera_max = ||w_k||^2 max_t (r a)^2 over routed tokens,
    max_abs_act with its (sample, position), and contribution = a[t*, k] w_k[c*] at the expert's own
    maximum; `expert` and `kind` as in expert_stats. Empty when the run recorded no atoms.
    """

    expert_stats: pd.DataFrame
    layer_stats: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    atom_stats: pd.DataFrame = field(default_factory=empty_atom_table)

    @property
    def num_layers(self) -> int:
        return int(self.meta["num_layers"])


def _batches(input_ids: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() != 2:
            raise UserError(f"input_ids must be a LongTensor [samples, seq_len], got shape {tuple(input_ids.shape)}.")
        yield from input_ids.split(batch_size)
    else:
        yield from input_ids


def _device_of(model: nn.Module) -> torch.device:
    return input_device(model)


def skip_logits(model: nn.Module) -> dict[str, Any]:
    """Keyword arguments that spare a forward the logits of every position: the statistics never read
    them, and [batch, seq, vocab] logits are the largest tensor of a forward (vocab 152k: 0.6 MB a token)."""
    params = inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


def run_capture(model: nn.Module, model_map: ModelMap, batches: Iterable[torch.Tensor], *, progress: bool,
                total: int | None = None, atoms: bool = True) -> tuple[Capture, torch.Tensor]:
    """Forward every batch with capture on (`atoms`: per-atom statistics too); returns the capture and
    all input ids (CPU)."""
    seen: list[torch.Tensor] = []
    device = _device_of(model)
    no_logits = skip_logits(model)
    with capture(model_map, atoms=atoms) as cap, torch.inference_mode():
        offset = 0
        for batch in tqdm(batches, total=total, desc="profiling", unit="batch", disable=not progress):
            if batch.dim() != 2 or batch.shape[1] < 2:
                raise UserError(f"each batch must be [batch, seq_len >= 2] token ids, got {tuple(batch.shape)}.")
            if seen and batch.shape[1] != seen[0].shape[1]:
                raise UserError("all calibration windows must have the same length; use --seq-len.")
            cap.start_batch(offset, batch.shape)
            try:
                model(input_ids=batch.to(device), use_cache=False, **no_logits)
            except (AttributeError, IndexError, RuntimeError, TypeError, ValueError) as e:
                raise model_code_failure(e, model_map.family) or e
            seen.append(batch.cpu())
            offset += batch.shape[0]
    if not seen:
        raise UserError("no calibration data: input_ids is empty; pass at least one [1, seq_len] window.")
    return cap, torch.cat(seen)


def model_code_failure(error: BaseException, family: str) -> UserError | None:
    """A one-line UserError when `error` was raised inside transformers' own modeling code, None when it
    came from elsewhere (`runs.errors.library_failure`)."""
    where = library_failure(error)
    if where is None:
        return None
    import transformers

    return UserError(f"{family}: the model's own forward fails in transformers {transformers.__version__} "
                     f"({where}); superexperts cannot profile it with this transformers version.")  # fmt: skip


def _decode(tokenizer, token_id: int) -> str:
    if tokenizer is None or token_id < 0:
        return ""
    return tokenizer.decode([token_id])


def expert_table(cap: Capture, input_ids: torch.Tensor, tokenizer=None) -> pd.DataFrame:
    seq_len = input_ids.shape[1]
    rows = []
    for (layer, kind), tracker in sorted(cap.experts.items()):
        for e, r in enumerate(tracker.to_rows()):
            token = r.pop("token")
            if token >= input_ids.numel():  # the expert's rows were not the batch's tokens
                raise UserError(f"{cap.model_map.family}: layer {layer} {kind} experts saw row {token} but the "
                                f"calibration holds {input_ids.numel()} tokens {tuple(input_ids.shape)}; its "
                                "experts' inputs do not map back to tokens, so this family cannot be profiled.")  # fmt: skip
            sample, position = (token // seq_len, token % seq_len) if token >= 0 else (-1, -1)
            token_id = int(input_ids[sample, position]) if token >= 0 else -1
            rows.append({"layer": layer, "expert": e if kind == "routed" else -1, "kind": kind, **r,
                         "sample": sample, "position": position, "token_id": token_id,
                         "token_text": _decode(tokenizer, token_id)})  # fmt: skip
    return pd.DataFrame(rows, columns=EXPERT_COLUMNS)


def atom_table(cap: Capture, seq_len: int) -> pd.DataFrame:
    """One row per atom of every expert with an AtomTracker; built column-wise in compact dtypes (Qwen3-30B-A3B
    has 4.7M atoms, DeepSeek-V3 30M: ~40 bytes each)."""
    parts = []
    for (layer, kind), tracker in sorted(cap.experts.items()):
        atoms = tracker.atoms
        if atoms is None or atoms.width == 0:
            continue
        e, width = atoms.sq_sum.shape
        norms = atoms.down_sq_norm.double().cpu().numpy()
        unweighted = atoms.unweighted.cpu().numpy()[:, None]
        token = atoms.max_act_token.cpu().numpy()
        routed = token >= 0
        experts = np.arange(e) if kind == "routed" else np.full(e, -1)
        parts.append(pd.DataFrame({
            "layer": np.full(e * width, layer, dtype=np.int32),
            "expert": np.repeat(experts, width).astype(np.int32),
            "kind": kind,
            "atom": np.tile(np.arange(width, dtype=np.int32), e),
            "camera_sum": np.where(unweighted, np.nan, norms * atoms.sq_sum.double().cpu().numpy()).ravel(),
            "camera_max": np.where(unweighted, np.nan, norms * atoms.sq_max.double().cpu().numpy()).ravel(),
            "max_abs_act": np.where(routed, atoms.max_abs_act.cpu().numpy(), 0.0).ravel(),
            "max_act_sample": np.where(routed, token // seq_len, -1).astype(np.int32).ravel(),
            "max_act_position": np.where(routed, token % seq_len, -1).astype(np.int32).ravel(),
            "contribution": atoms.contribution.cpu().numpy().ravel(),
        }))  # fmt: skip
    return pd.concat(parts, ignore_index=True) if parts else empty_atom_table()


def flag_massive(
    layer_stats: pd.DataFrame, *, min_abs: float = 100.0, min_ratio: float = 1000.0
) -> pd.Series:
    """Sun et al. 2024: a massive activation exceeds `min_abs` and `min_ratio` x the median magnitude."""
    top = layer_stats["top1_abs"]
    return (top > min_abs) & (top > min_ratio * layer_stats["median_abs"])


def layer_table(cap: Capture, input_ids: torch.Tensor, tokenizer=None) -> pd.DataFrame:
    seq_len = input_ids.shape[1]
    rows = []
    for layer, t in sorted(cap.massive.items()):
        row: dict[str, Any] = {"layer": layer}
        hidden = int(t.hidden_size)
        for k, (v, idx) in enumerate(zip(t.values.cpu().tolist(), t.flat_index.cpu().tolist()), start=1):
            token, channel = divmod(idx, hidden)
            sample, position = divmod(token, seq_len)
            row |= {f"top{k}_abs": v, f"top{k}_channel": channel, f"top{k}_sample": sample,
                    f"top{k}_position": position,
                    f"top{k}_token_text": _decode(tokenizer, int(input_ids[sample, position]))}  # fmt: skip
        row["median_abs"] = float(t.median_sum) / max(t.batches, 1)
        row["nonfinite"] = int(t.nonfinite)
        rows.append(row)
    table = pd.DataFrame(rows)
    table["massive"] = flag_massive(table)
    return table


def describe_model(model: nn.Module, model_map: ModelMap) -> dict[str, Any]:
    config = getattr(model, "config", None)
    b0 = model_map.moe[0]
    return {
        "model_type": getattr(config, "model_type", type(model).__name__),
        "model_class": type(model).__name__,
        "name_or_path": getattr(config, "_name_or_path", ""),
        "num_layers": model_map.num_layers,
        "moe_layers": [b.layer for b in model_map.moe],
        "dense_layers": [d.layer for d in model_map.dense],
        "other_layers": list(model_map.other),  # neither experts nor an MLP (hybrids' Mamba/attention layers)
        "num_experts": b0.num_experts,
        "num_experts_total": sum(b.num_experts for b in model_map.moe),
        "has_shared_experts": any(b.shared is not None for b in model_map.moe),
        "experts_layout": b0.layout,
        "experts_implementation": getattr(getattr(b0.experts, "config", None), "_experts_implementation", None),
        "device": str(_device_of(model)),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }


def profile(
    model: nn.Module,
    input_ids: torch.Tensor | Iterable[torch.Tensor],
    *,
    batch_size: int | str = "auto",
    tokenizer=None,
    progress: bool = False,
    atoms: bool = True,
) -> Profile:
    """Profile a loaded transformers MoE model on calibration token ids.

    `batch_size`: windows per forward, or "auto": the most that fit the device's memory and a
    token budget (`superexperts.capture.batching`); meta records both the request and the batch used.

    >>> prof = superexperts.profile(model, input_ids)  # input_ids: LongTensor [N, T]
    >>> prof.expert_stats.nlargest(3, "max_abs_output")[["layer", "expert", "max_abs_output"]]
    """
    model_map = map_model(model)
    if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2:
        batch_size, batch_meta = resolve_batch_size(batch_size, model, samples=len(input_ids),
                                                    seq_len=input_ids.shape[1])  # fmt: skip
    else:  # [N, T] checked by _batches; an iterable brings its own batches
        batch_size = parse_batch_size(batch_size)
        batch_meta = {"batch_size_requested": batch_size}
    total = -(-len(input_ids) // batch_size) if isinstance(input_ids, torch.Tensor) else None
    start = time.perf_counter()
    cap, all_ids = run_capture(model, model_map, _batches(input_ids, batch_size), progress=progress, total=total,
                               atoms=atoms)
    seconds = time.perf_counter() - start
    meta = describe_model(model, model_map) | {
        "samples": int(all_ids.shape[0]),
        "seq_len": int(all_ids.shape[1]),
        "tokens": int(all_ids.numel()),
        "batch_size": batch_size,
        **batch_meta,
        "profile_seconds": round(seconds, 3),
        "layer_stats_method": LAYER_STATS_METHOD,
        "atoms": atoms,  # per-atom statistics recorded (atom_stats); False: --no-atoms
    }
    return Profile(expert_table(cap, all_ids, tokenizer), layer_table(cap, all_ids, tokenizer), meta,
                   atom_table(cap, all_ids.shape[1]))
