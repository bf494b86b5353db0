"""Sink mass, sink rate, q/k/v norms and D_sink for the original model and any ablations.

Batches are the outer loop: each batch runs through the original model, then through every
ablated condition, so D_sink (paper Eq. 7: a per-query ratio against the original) is
accumulated as running sums and memory holds one batch's per-query masses at a time.

    >>> result = measure_sinks(model, input_ids, {"super": [(1, 68), (2, 92)]})
    >>> result.conditions[1].d_sink          # per layer, 1 = the sink is gone
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...models.adapters import find_decoder_layers, input_device
from ...models.experts import Expert
from ...runs.errors import UserError
from ..ablate import ablate
from . import metrics
from .attention import LayerSinks, record_sinks
from .hidden import max_hidden


@dataclass
class Sums:
    """Running per-layer, per-head sums of one condition."""

    mass: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # [sum, count] on S
    first: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # [sum, count] on token 0
    ratio: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # [sum, count] of p'/p
    norms: dict[str, dict[int, list[torch.Tensor]]] = field(default_factory=dict)  # q/k/v -> [sum, n]
    hidden: dict[int, float] = field(default_factory=dict)


def _add(acc: dict, key, total: torch.Tensor, count: torch.Tensor) -> None:
    if key in acc:
        acc[key][0] += total
        acc[key][1] += count
    else:
        acc[key] = [total.clone(), count.clone()]


@dataclass
class ConditionSinks:
    """One condition's result. Arrays are (layers, heads); per-layer lists are head means."""

    name: str
    experts: list[Expert]
    head_mass: torch.Tensor  # mean attention on the sink keys, NaN where no query sees them
    first_token_mass: torch.Tensor  # mean attention on token 0 (for the sink rate)
    d_sink: list[float] | None  # per layer, None for the original
    norms: dict[str, list[list[float]]]  # q/k/v -> per layer [sink token, mean of others]
    max_hidden: list[float]  # per layer, max |hidden| after the layer

    @property
    def sink_mass(self) -> list[float]:
        return [metrics.mean_or_nan(row.tolist()) for row in self.head_mass]

    def sink_rate(self, epsilon: float = metrics.EPSILON) -> float:
        return metrics.sink_rate(self.first_token_mass, epsilon)


@dataclass
class SinkResult:
    sink_keys: list[int]
    conditions: list[ConditionSinks]
    implementation: str
    epsilon: float = metrics.EPSILON

    def __getitem__(self, name: str) -> ConditionSinks:
        for c in self.conditions:
            if c.name == name:
                return c
        raise KeyError(name)


def _device(model: nn.Module) -> torch.device:
    return input_device(model)


def _forward(model: nn.Module, batch: torch.Tensor, key_sets, *, key_mass: bool = False):
    with torch.no_grad(), record_sinks(model, key_sets, key_mass=key_mass) as rec, max_hidden(model) as peaks:
        model(input_ids=batch, use_cache=False)
    if not rec.layers:
        raise UserError(
            f"{type(model).__name__} never called the attention registry, so its attention cannot be "
            "recorded; load it with attn_implementation='sdpa' or 'eager' (and without trust_remote_code).")
    return rec, peaks


def accumulate(sums: Sums, layers: Mapping[int, LayerSinks], peaks: Mapping[int, float],
                original: Mapping[int, LayerSinks] | None) -> None:
    for layer, ls in layers.items():
        _add(sums.mass, layer, *metrics.head_sums(ls.mass[..., 0], ls.visible[..., 0]))
        _add(sums.first, layer, *metrics.head_sums(ls.mass[..., -1], ls.visible[..., -1]))
        if original is not None:
            ref = original[layer]
            _add(sums.ratio, layer, *metrics.ratio_sums(ref.mass[..., 0], ls.mass[..., 0], ref.visible[..., 0]))
        for name, n in ls.norms.items():  # (batch, heads, 2) -> mean over heads, summed over batch
            _add(sums.norms.setdefault(name, {}), layer, n.double().mean(1).sum(0), torch.tensor(float(n.shape[0])))
    for layer, value in peaks.items():
        sums.hidden[layer] = max(sums.hidden.get(layer, value), value)


def finish_condition(name: str, experts: list[Expert], sums: Sums, num_layers: int) -> ConditionSinks:
    layers = range(num_layers)

    def per_layer(table: dict, layer: int) -> list[torch.Tensor]:
        """[total, count] of a layer; for layers without attention (hybrids' Mamba and MLP-only layers,
        Nemotron-H), which recorded nothing, NaN totals with zero counts shaped like the others."""
        if layer in table:
            return table[layer]
        total, count = next(iter(table.values()))
        return [torch.full_like(total.float(), float("nan")), torch.zeros_like(count)]

    norms = {k: [(per_layer(v, layer)[0] / per_layer(v, layer)[1]).tolist() for layer in layers]
             for k, v in sums.norms.items()}  # fmt: skip
    return ConditionSinks(
        name=name, experts=list(experts),
        head_mass=torch.stack([metrics.safe_mean(*per_layer(sums.mass, layer)) for layer in layers]),
        first_token_mass=torch.stack([metrics.safe_mean(*per_layer(sums.first, layer)) for layer in layers]),
        d_sink=[metrics.d_sink(*per_layer(sums.ratio, layer)) for layer in layers] if sums.ratio else None,
        norms=norms, max_hidden=[sums.hidden.get(layer, float("nan")) for layer in layers],
    )


def choose_sink_keys(model: nn.Module, batches: Sequence[torch.Tensor], top_k: int) -> list[int]:
    """The top-k most attended key positions of the original model (summed over layers, heads, queries)."""
    total = None
    for batch in batches:
        rec, _ = _forward(model, batch, [(0,)], key_mass=True)
        mass = sum(ls.key_mass.sum(dim=(0, 1)) for ls in rec.layers.values())
        total = mass if total is None else total + mass
    return metrics.top_k_keys(total, top_k)


def check_input(input_ids: torch.Tensor) -> list[torch.Tensor]:
    if input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise UserError(f"sink metrics need at least 2 tokens per sequence (got shape {tuple(input_ids.shape)}); "
                        "pass a longer --text or --data.")
    return list(input_ids.split(1))


def check_keys(keys: Sequence[int], length: int) -> list[int]:
    """The sink key positions, sorted and unique; each must lie in 0..length-1."""
    keys = sorted({int(i) for i in keys})
    if not keys or min(keys) < 0 or max(keys) >= length:
        raise UserError(f"sink keys {keys} must be positions 0..{length - 1} of the input.")
    return keys


def measure_sinks(model: nn.Module, input_ids: torch.Tensor,
                  conditions: Mapping[str, list[Expert] | Callable[[], AbstractContextManager]] | None = None,
                  *, sink_keys: Sequence[int] = (0,), top_k: int | None = None, mode: str = "zero",
                  epsilon: float = metrics.EPSILON) -> SinkResult:
    """Sink metrics of the original model and of each ablation in `conditions` (name -> experts, or
    name -> a function returning a context manager that changes the model, e.g. quantization).

    input_ids (samples, T), run one sample at a time; with `top_k` the sink keys are the top-k
    most attended positions of the original model instead of `sink_keys`.
    """
    batches = check_input(input_ids)
    keys = check_keys(choose_sink_keys(model, batches, top_k) if top_k else sink_keys, input_ids.shape[1])
    key_sets = [tuple(keys), (0,)]  # the last set is always the first token, for the sink rate
    named = {"original": []} | dict(conditions or {})
    sums = {name: Sums() for name in named}
    implementation = ""
    for batch in batches:
        original, peaks = _forward(model, batch.to(_device(model)), key_sets)
        implementation = f"{original.implementation} (model configured: {original.configured})"
        accumulate(sums["original"], original.layers, peaks, None)
        for name, experts in named.items():
            if name == "original":
                continue
            with experts() if callable(experts) else ablate(model, list(experts), mode=mode):
                rec, peaks = _forward(model, batch.to(_device(model)), key_sets)
            accumulate(sums[name], rec.layers, peaks, original.layers)
    num_layers = len(find_decoder_layers(model))  # every layer, also those without attention (hybrids)
    results = [finish_condition(name, [] if callable(named[name]) else named[name], sums[name], num_layers)
               for name in named]
    return SinkResult(sink_keys=keys, conditions=results, implementation=implementation, epsilon=epsilon)


def result_json(result: SinkResult) -> dict[str, Any]:
    """The `conditions` part of sinks.json (metadata is added by the caller)."""
    conditions = []
    for c in result.conditions:
        entry: dict[str, Any] = {
            "name": c.name, "experts": [{"layer": int(lyr), "expert": e} for lyr, e in c.experts],
            "sink_mass": c.sink_mass, "sink_rate": c.sink_rate(result.epsilon),
            "sink_mass_per_head": c.head_mass.tolist(), "max_hidden": c.max_hidden, "norms": c.norms,
        }
        if c.d_sink is not None:
            entry["d_sink"] = c.d_sink
        conditions.append(entry)
    return {"conditions": conditions, "sink_keys": result.sink_keys, "epsilon": result.epsilon,
            "query_aggregation": metrics.QUERY_AGGREGATION, "attention_implementation": result.implementation,
            "norms_note": "mean L2 norm of q/k/v (after RoPE) at the sink tokens vs the mean of the other tokens"}
