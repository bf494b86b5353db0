"""Random control sets: as many non-SE routed experts as there are SEs (paper Sec. 4, v3).

`global` draws from every MoE layer; `layer_controlled` draws, for each SE, a non-SE from the
same layer (same count per layer), so "pruning anything in layers 1-3 hurts" is ruled out.
Pure functions: they take the number of experts per layer, not the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...models.adapters import ModelMap
from ...models.experts import Expert
from ...runs.errors import UserError


def experts_per_layer(model_map: ModelMap | Mapping[int, int]) -> dict[int, int]:
    """{MoE layer: number of routed experts}."""
    if isinstance(model_map, ModelMap):
        return {b.layer: b.num_experts for b in model_map.moe}
    return {int(k): int(v) for k, v in model_map.items()}


def _draw(rng: np.random.Generator, pool: list[Expert], count: int, where: str) -> list[Expert]:
    if count > len(pool):
        raise UserError(f"cannot draw {count} random non-SE experts {where}: only {len(pool)} exist.")
    return [pool[i] for i in rng.choice(len(pool), size=count, replace=False)]


MAX_CONDITIONS = 50  # evaluation conditions run without --many (the defaults plan 2-8)


def check_planned_conditions(count: int, *, many: bool) -> None:
    """Refuse more than MAX_CONDITIONS conditions unless `many` (--many): each is a full evaluation
    pass, so the run takes about `count` times one evaluation of the model."""
    if count > MAX_CONDITIONS and not many:
        raise UserError(f"{count} conditions planned, each a full evaluation pass: about {count}x the time of "
                        f"evaluating the model once (more than {MAX_CONDITIONS}); pass a smaller --random, "
                        "or --many to run them all.")  # fmt: skip


def disjoint_sets(pool: Mapping[int, list[Expert]], wanted: Mapping[int, int], *, layer_controlled: bool) -> int:
    """How many pairwise disjoint control sets the non-SE experts `pool` (per layer) allow, for
    `wanted` SEs per layer: all layers pooled, or layer by layer when layer-controlled."""
    if layer_controlled:
        return min(len(pool[layer]) // k for layer, k in wanted.items())
    return sum(len(p) for p in pool.values()) // sum(wanted.values())


def _pool_and_wanted(per_layer: Mapping[int, int], super_experts: Sequence[Expert]):
    """The non-SE routed experts per layer, and the number of SEs per layer."""
    se = set(super_experts)
    pool = {layer: [(layer, e) for e in range(n) if (layer, e) not in se] for layer, n in per_layer.items()}
    wanted: dict[int, int] = {}
    for layer, _ in super_experts:
        wanted[layer] = wanted.get(layer, 0) + 1
    return pool, wanted


def disjoint_control_limit(num_layers: int, num_experts: int, super_experts: Sequence[Expert], *,
                           layer_controlled: bool) -> int | None:  # fmt: skip
    """How many disjoint control sets a model of `num_layers` layers with `num_experts` routed experts
    each allows for `super_experts`: config numbers alone, before any weight is read (issue 23).
    Every layer counts as an MoE layer, so this is an upper bound of the exact count (dense layers
    have no experts) and never refuses what the model allows; `random_controls` applies the exact one.
    None when an SE lies outside the layers (the experts check says so).

    >>> disjoint_control_limit(48, 128, [(1, 68), (2, 92), (3, 82)], layer_controlled=True)
    127
    """
    if not super_experts or any(not 0 <= layer < num_layers for layer, _ in super_experts):
        return None
    pool, wanted = _pool_and_wanted({layer: num_experts for layer in range(num_layers)}, super_experts)
    return disjoint_sets(pool, wanted, layer_controlled=layer_controlled)


def check_control_count(n_seeds: int, limit: int | None, n_super: int, *, layer_controlled: bool) -> None:
    """Refuse more random control sets than `limit` disjoint ones (past it the sets must overlap, and
    10^20 seeds would hang the drawing); 0 or None: not decided here."""
    if limit and n_seeds > limit:
        where = "in the SEs' layers" if layer_controlled else "in the model"
        raise UserError(f"--random {n_seeds} is more than the {limit} disjoint control sets (of "
                        f"{n_super} non-SE experts each) {where}; pass --random {limit} or fewer.")  # fmt: skip


def check_controls_fit(config: Any, super_experts: Sequence[Expert] | None, n_seeds: int, *,
                       layer_controlled: bool) -> None:  # fmt: skip
    """`check_control_count` before loading, from a model config: a transformers config or its
    config.json as a dict (layers and routed experts per layer read from either)."""
    if not n_seeds or not super_experts:
        return
    from ...models.loading import EXPERT_COUNT_KEYS

    def get(obj: Any, key: str) -> Any:
        return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)

    text = get(config, "text_config") or config
    layers = get(text, "num_hidden_layers")
    experts = next((get(text, k) for k in EXPERT_COUNT_KEYS if isinstance(get(text, k), int)), None)
    if isinstance(layers, int) and isinstance(experts, int):
        limit = disjoint_control_limit(layers, experts, super_experts, layer_controlled=layer_controlled)
        check_control_count(n_seeds, limit, len(super_experts), layer_controlled=layer_controlled)


def random_controls(
    model_map: ModelMap | Mapping[int, int],
    super_experts: list[Expert],
    n_seeds: int,
    *,
    layer_controlled: bool = False,
    seed: int = 0,
) -> list[list[Expert]]:
    """One random non-SE expert set per seed (seeds `seed .. seed + n_seeds - 1`), each sorted.

    A shared SE counts like a routed one: its control is a routed non-SE expert (of its layer
    when layer-controlled).

    >>> random_controls({1: 128, 2: 128}, [(1, 68), (2, 92)], 2, layer_controlled=True)
    [[(1, 5), (2, 117)], [(1, 90), (2, 7)]]   # values illustrative
    """
    if n_seeds < 0:
        raise UserError(f"--random must be >= 0, got {n_seeds}.")
    per_layer = experts_per_layer(model_map)
    if not super_experts:
        raise UserError("no Super Experts to match: random controls need at least one SE.")
    unknown = sorted({layer for layer, _ in super_experts} - per_layer.keys())
    if unknown:
        raise UserError(f"SE layers {unknown} have no routed experts; MoE layers are {sorted(per_layer)}.")
    pool, wanted = _pool_and_wanted(per_layer, super_experts)
    limit = disjoint_sets(pool, wanted, layer_controlled=layer_controlled)  # 0: `_draw` says why
    check_control_count(n_seeds, limit, len(super_experts), layer_controlled=layer_controlled)
    controls = []
    for s in range(seed, seed + n_seeds):
        rng = np.random.default_rng(s)
        if layer_controlled:
            chosen = [x for layer, k in sorted(wanted.items()) for x in _draw(rng, pool[layer], k, f"in layer {layer}")]
        else:
            everything = [x for layer in sorted(pool) for x in pool[layer]]
            chosen = _draw(rng, everything, len(super_experts), "in the model")
        controls.append(sorted(chosen, key=lambda x: (x[0], x[1])))
    return controls
