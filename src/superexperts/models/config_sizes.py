"""The sizes a model config states, read without torch: decoder layers, routed experts per layer and
their width (atoms per expert), so that requests range-check expert and atom lists before any weight
is read. `config` is a transformers config or the dict of a config.json; a vision-language model's
sizes are those of its `text_config`. A size the config does not state is None (checked after loading).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..runs.errors import UserError

EXPERT_COUNT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
# The routed experts' intermediate size I, first key present wins: MoE-specific where the family has dense
# MLPs too (Qwen3-MoE, DeepSeek, GLM), else the only one (Mixtral, GPT-OSS, OLMoE, Llama4's experts).
EXPERT_WIDTH_KEYS = ("moe_intermediate_size", "intermediate_size")


def _get(config: Any, key: str) -> Any:
    return config.get(key) if isinstance(config, dict) else getattr(config, key, None)


def _text(config: Any) -> Any:
    return _get(config, "text_config") or config


def _size(config: Any, keys: Iterable[str]) -> int | None:
    """The first of `keys` the config has, when it is one positive int (a per-layer list: None)."""
    for key in keys:
        value = _get(config, key)
        if value is not None:
            return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
    return None


def config_sizes(config: Any) -> tuple[int | None, int | None, int | None]:
    """(decoder layers, routed experts per layer, atoms per routed expert), None where not stated.

    >>> config_sizes({"num_hidden_layers": 48, "num_experts": 128, "moe_intermediate_size": 768})
    (48, 128, 768)
    """
    text = _text(config)
    return _size(text, ("num_hidden_layers",)), _size(text, EXPERT_COUNT_KEYS), _size(text, EXPERT_WIDTH_KEYS)


def check_atoms_in_config(atoms: Iterable[tuple[int, int | str, int]], config: Any) -> None:
    """Range-check (layer, expert, atom) triples against the config alone; a one-line UserError names the first
    bad entry and the valid range. Shared experts' widths differ by family: their atoms are checked after loading,
    as are layers without routed experts (dense or hybrid layers).

    >>> check_atoms_in_config([(1, 68, 3)], {"num_hidden_layers": 48, "num_experts": 128, "moe_intermediate_size": 768})
    """
    layers, experts, width = config_sizes(config)
    for layer, expert, k in atoms:
        bad = f"atom {layer}:{expert}:{k} is out of range;"  # worded as models.atoms.validate_atoms after loading
        if layers is not None and not 0 <= layer < layers:
            raise UserError(f"{bad} the model has layers 0..{layers - 1}.")
        if k < 0:
            raise UserError(f"{bad} atoms count from 0.")
        if expert == "shared":
            continue
        if experts is not None and not 0 <= int(expert) < experts:
            raise UserError(f"{bad} the model has experts 0..{experts - 1}.")
        if width is not None and k >= width:
            raise UserError(f"{bad} expert {layer}:{expert} has atoms 0..{width - 1}.")
