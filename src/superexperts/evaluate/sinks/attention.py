"""Record the attention mass on sink keys without materialising T x T attention matrices.

A custom attention function is registered with transformers' attention registry under two
names, one per mask convention ("superexperts_sinks_sdpa" receives the mask sdpa would,
"superexperts_sinks_eager" the additive mask eager would). It returns the normal attention
output, computed by the implementation the model would have used, and on the side records, per
decoder layer, the probability that each query puts on the sink keys. The probabilities are
computed in chunks of queries: logits of the chunk against all keys with the model's mask,
scaling, softcap, sliding window and learned sink logits (GPT-OSS `s_aux`, which enter the
softmax denominator), a logsumexp, then the mass on the sink keys. Peak extra memory is a
few chunk-sized temporaries (`chunk_elements` floats each) plus O(T) per layer, whatever the
sequence length (measured: +48 MiB over sdpa at T=16384, where eager needs GiBs).

    >>> with record_sinks(model, sink_keys=[(0,)]) as rec:
    ...     model(input_ids)
    >>> rec.layers[3].mass.shape        # (batch, heads, queries, key sets)
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ...models.adapters import find_decoder_layers
from ...runs.errors import UserError

NAME = "superexperts_sinks"
CHUNK_ELEMENTS = 1 << 22  # floats per query chunk of logits: 16 MB in float32


@dataclass
class LayerSinks:
    """What one attention call recorded. `mass[b, h, t, j]` = probability query t puts on key set j;
    `visible[b, h, t, j]` = the mask lets query t see at least one key of set j."""

    mass: torch.Tensor  # (batch, heads, queries, sets) float32
    visible: torch.Tensor  # (batch, heads, queries, sets) bool
    norms: dict[str, torch.Tensor]  # q/k/v -> (batch, heads, 2): [sink keys mean, others mean]
    key_mass: torch.Tensor | None = None  # (batch, heads, keys): sum over queries t > 0
    probs: torch.Tensor | None = None  # (batch, heads, queries, keys): only for layers in `maps`


@dataclass
class SinkRecording:
    """Per decoder layer index, the record of the last forward."""

    sink_keys: tuple[tuple[int, ...], ...]
    key_mass: bool = False
    chunk_elements: int = CHUNK_ELEMENTS
    implementation: str = ""  # "eager" or "sdpa": whose mask and output the recording reuses
    configured: str = ""  # what the model was set to (flash/flex models are recorded through sdpa)
    maps: frozenset[int] = frozenset()  # layers whose full attention map is kept (short inputs)
    layers: dict[int, LayerSinks] = field(default_factory=dict)


# id(attention module) -> (recording, decoder layer index); filled only inside `record_sinks`.
_ACTIVE: dict[int, tuple[SinkRecording, int]] = {}


def _allowed(mask: torch.Tensor | None, rows: slice, q_pos: torch.Tensor, k_len: int, *, causal: bool,
             window: int | None) -> torch.Tensor:
    """Bool (batch|1, heads|1, rows, keys): which keys each query of the chunk may attend to."""
    k_pos = torch.arange(k_len, device=q_pos.device)
    if mask is None:  # sdpa's "plain causal" shortcut: rebuild the pattern
        allowed = (k_pos[None, :] <= q_pos[:, None]) if causal else torch.ones(
            len(q_pos), k_len, dtype=torch.bool, device=q_pos.device)
        if window is not None:
            allowed = allowed & (q_pos[:, None] - k_pos[None, :] < window)
        return allowed[None, None]
    chunk = mask[..., rows, :k_len]
    if chunk.dtype == torch.bool:
        return chunk
    return chunk > torch.finfo(chunk.dtype).min / 2  # additive masks use dtype-min for "blocked"


def _chunk_logits(q: torch.Tensor, k: torch.Tensor, mask_chunk: torch.Tensor | None, allowed: torch.Tensor,
                  scaling: float, softcap: float | None) -> torch.Tensor:
    """(batch, heads, rows, keys) float32 logits of one query chunk, blocked keys at -inf.
    q: (batch, kv_heads, groups, rows, d); k: (batch, kv_heads, 1, keys, d) - GQA without repeat_kv."""
    b, kvh, g, rows, _ = q.shape
    logits = (q @ k.transpose(-1, -2)).reshape(b, kvh * g, rows, -1).mul_(scaling)  # in place: one chunk alive
    if softcap is not None:  # as eager does, before the mask
        logits = torch.tanh(logits / softcap) * softcap
    if mask_chunk is not None and mask_chunk.dtype != torch.bool:
        logits += mask_chunk  # keep any additive bias the model put in its mask
    return logits.masked_fill_(~allowed, float("-inf"))


def chunked_probabilities(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None, *,
                          scaling: float | None = None, softcap: float | None = None,
                          sliding_window: int | None = None, sink_logits: torch.Tensor | None = None,
                          causal: bool = True, chunk_elements: int = CHUNK_ELEMENTS) -> Iterator[tuple]:
    """Yield (rows, query positions, probs (b, h, rows, Tk) float32, allowed) one query chunk at a time.

    query (batch, heads, Tq, d), key (batch, kv_heads, Tk, d); queries are the last Tq positions.
    """
    b, h, tq, d = query.shape
    kvh, tk = key.shape[1], key.shape[2]
    scaling = d**-0.5 if scaling is None else scaling
    q = query.float().reshape(b, kvh, h // kvh, tq, d)  # heads of one kv group are contiguous
    k = key.float().unsqueeze(2)
    step = max(1, chunk_elements // max(1, b * h * tk))
    for start in range(0, tq, step):
        rows = slice(start, min(tq, start + step))
        q_pos = torch.arange(rows.start, rows.stop, device=query.device) + (tk - tq)
        allowed = _allowed(attention_mask, rows, q_pos, tk, causal=causal, window=sliding_window)
        mask_chunk = None if attention_mask is None else attention_mask[..., rows, :tk]
        logits = _chunk_logits(q[..., rows, :], k, mask_chunk, allowed, scaling, softcap)
        lse = torch.logsumexp(logits, dim=-1)  # (b, h, rows)
        if sink_logits is not None:  # GPT-OSS: a learned per-head logit joins the denominator
            lse = torch.logaddexp(lse, sink_logits.float().view(1, h, 1))
        probs = logits.sub_(lse.unsqueeze(-1)).exp_().nan_to_num_(0.0)  # rows with nothing visible -> 0
        yield rows, q_pos, probs, allowed


def sink_probabilities(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None, *,
                       sink_keys: Sequence[Sequence[int]], key_mass: bool = False, **softmax_args: Any):
    """Attention probability on each key set, per query, computed chunk by chunk.

    `softmax_args` are those of `chunked_probabilities`. Returns (mass (b, h, Tq, sets),
    visible (b, h, Tq, sets), key_mass (b, h, Tk) summed over queries t > 0, or None).
    """
    b, h, tq, _ = query.shape
    tk = key.shape[2]
    mass = query.new_zeros(b, h, tq, len(sink_keys), dtype=torch.float32)
    visible = torch.zeros(b, h, tq, len(sink_keys), dtype=torch.bool, device=query.device)
    column_mass = query.new_zeros(b, h, tk, dtype=torch.float32) if key_mass else None
    sets = [torch.as_tensor(list(s), device=query.device, dtype=torch.long) for s in sink_keys]
    for rows, q_pos, probs, allowed in chunked_probabilities(query, key, attention_mask, **softmax_args):
        for j, s in enumerate(sets):
            mass[..., rows, j] = probs[..., s].sum(-1)
            visible[..., rows, j] = allowed[..., s].any(-1)  # broadcasts over batch/heads
        if column_mass is not None:
            counted = (q_pos > 0).float()  # the aggregation excludes query 0, which can only see itself
            column_mass += torch.einsum("bhrk,r->bhk", probs, counted)
    return mass, visible, column_mass


def full_probabilities(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
                       **softmax_args: Any) -> torch.Tensor:
    """The whole (b, h, Tq, Tk) attention map: for short inputs only (attention maps)."""
    return torch.cat([p for _, _, p, _ in chunked_probabilities(query, key, attention_mask, **softmax_args)], 2)


def _norms(x: torch.Tensor, sink: torch.Tensor) -> torch.Tensor:
    """(batch, heads, 2): mean L2 norm over the sink positions and over all other positions."""
    n = x.float().norm(dim=-1)  # (b, h, T)
    others = torch.ones(n.shape[-1], dtype=torch.bool, device=n.device)
    others[sink] = False
    other_mean = n[..., others].mean(-1) if others.any() else torch.full_like(n[..., 0], float("nan"))
    return torch.stack([n[..., sink].mean(-1), other_mean], dim=-1)


def _record(rec: SinkRecording, layer: int, module: nn.Module, query, key, value, attention_mask, kwargs) -> None:
    causal = kwargs.get("is_causal")
    softmax_args = {
        "scaling": kwargs.get("scaling"), "softcap": kwargs.get("softcap"), "sink_logits": kwargs.get("s_aux"),
        "sliding_window": kwargs.get("sliding_window", getattr(module, "sliding_window", None)),
        "causal": getattr(module, "is_causal", True) if causal is None else causal,
        "chunk_elements": rec.chunk_elements}
    with torch.no_grad():
        mass, visible, column_mass = sink_probabilities(
            query, key, attention_mask, sink_keys=rec.sink_keys, key_mass=rec.key_mass, **softmax_args)
        sink = torch.as_tensor(rec.sink_keys[0], device=query.device)
        norms = {"q": _norms(query, sink), "k": _norms(key, sink), "v": _norms(value, sink)}  # prefill: Tq == Tk
        probs = full_probabilities(query, key, attention_mask, **softmax_args) if layer in rec.maps else None
    rec.layers[layer] = LayerSinks(mass=mass, visible=visible, norms=norms, key_mass=column_mass, probs=probs)


def _module_eager(module: nn.Module) -> Callable:
    """The eager attention of the module's own modeling file (GPT-OSS's knows about sinks)."""
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if fn is None:
        raise UserError(f"{type(module).__name__} has no eager_attention_forward in its modeling file; "
                        "load the model with attn_implementation='sdpa' to record sinks.")
    return fn


def _make_attention(base: str) -> Callable:
    def attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
        target = _ACTIVE.get(id(module))
        if target is not None:
            _record(target[0], target[1], module, query, key, value, attention_mask, kwargs)
        delegate = _module_eager(module) if base == "eager" else ALL_ATTENTION_FUNCTIONS["sdpa"]
        return delegate(module, query, key, value, attention_mask, **kwargs)

    attention.__name__ = f"{NAME}_{base}"
    return attention


for _base in ("eager", "sdpa"):
    AttentionInterface.register(f"{NAME}_{_base}", _make_attention(_base))
    # Without a matching mask function transformers would pass no mask at all to a custom name.
    AttentionMaskInterface.register(f"{NAME}_{_base}", ALL_MASK_ATTENTION_FUNCTIONS[_base])


def _configs(model: nn.Module) -> list:
    """Every config object the model's modules read `_attn_implementation` from."""
    found: dict[int, object] = {}
    stack = [getattr(m, "config", None) for m in model.modules()]
    while stack:
        cfg = stack.pop()
        if cfg is None or id(cfg) in found or not hasattr(cfg, "_attn_implementation_internal"):
            continue
        found[id(cfg)] = cfg
        stack.extend(getattr(cfg, key, None) for key in getattr(cfg, "sub_configs", {}))
    return list(found.values())


def base_implementation(model: nn.Module) -> str:
    """The implementation whose output and mask convention the recording reuses: eager when the
    model runs eager or cannot run sdpa (GPT-OSS), otherwise sdpa (also for flash/flex models)."""
    current = getattr(model.config, "_attn_implementation", None) or "eager"
    if current == "eager" or not getattr(model, "_supports_sdpa", False):
        return "eager"
    return "sdpa"


@contextlib.contextmanager
def attention_implementation(model: nn.Module, name: str) -> Iterator[None]:
    """Point every config of `model` at attention implementation `name`, restore on exit."""
    configs = _configs(model)
    saved = [c._attn_implementation_internal for c in configs]
    try:
        for c in configs:
            c._attn_implementation_internal = name
        yield
    finally:
        for c, old in zip(configs, saved):
            c._attn_implementation_internal = old


@contextlib.contextmanager
def record_sinks(model: nn.Module, sink_keys: Sequence[Sequence[int]] = ((0,),), *, key_mass: bool = False,
                 chunk_elements: int = CHUNK_ELEMENTS, maps: Sequence[int] = ()) -> Iterator[SinkRecording]:
    """Record, for every decoder layer, each query's attention mass on each key set in `sink_keys`
    (and the full attention map of the layers in `maps`: T x T, for short inputs only)."""
    base = base_implementation(model)
    rec = SinkRecording(sink_keys=tuple(tuple(int(i) for i in s) for s in sink_keys), key_mass=key_mass,
                        chunk_elements=chunk_elements, implementation=base, maps=frozenset(maps),
                        configured=str(getattr(model.config, "_attn_implementation", None)))
    modules = {id(m): (rec, i) for i, layer in enumerate(find_decoder_layers(model)) for m in layer.modules()}
    if modules.keys() & _ACTIVE.keys():
        raise RuntimeError("record_sinks is already active on this model; nesting is not supported.")
    _ACTIVE.update(modules)
    try:
        with attention_implementation(model, f"{NAME}_{base}"):
            yield rec
    finally:
        for k in modules:
            _ACTIVE.pop(k, None)


def attention_layers(model: nn.Module, input_ids: torch.Tensor) -> list[int]:
    """The decoder layers that call an attention function, from one forward over `input_ids` (hybrids such
    as Nemotron-H or Jamba alternate them with Mamba and MLP-only layers)."""
    with torch.no_grad(), record_sinks(model) as rec:
        model(input_ids=input_ids, use_cache=False)
    return sorted(rec.layers)
