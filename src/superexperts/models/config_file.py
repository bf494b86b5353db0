"""A checkpoint's config.json read with json alone, and the numbers the input checks take from a config.

transformers' AutoConfig imports torch (seconds), so a request's checks (layers of --include-layers,
expert indices, the run a --from folder was profiled on) read a local folder's config.json here
instead, and answer before anything heavy is imported. `config_layers` and `experts_per_layer` work
on both kinds of config, a transformers one or this module's attribute view, so every caller counts
the same way.

    >>> config = local_config("Qwen3-30B-A3B/")   # None: not a local folder, or AutoConfig must decide
    >>> config_layers(config), experts_per_layer(config)
    (48, 128)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..runs.errors import UserError
from .demo_data import DEMO_SPEC, default_cache_dir

EXPERT_COUNT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
# The routed experts' intermediate size I, first key present wins: MoE-specific where the family has dense
# MLPs too (Qwen3-MoE, DeepSeek, GLM), else the only one (Mixtral, GPT-OSS, OLMoE, Llama4's experts).
EXPERT_WIDTH_KEYS = ("moe_intermediate_size", "intermediate_size")


def _get(config: Any, key: str) -> Any:
    """A config field, from a transformers config, this module's attribute view or a config.json dict."""
    return config.get(key) if isinstance(config, dict) else getattr(config, key, None)


def _text(config) -> Any:
    """The language model's part of a config (a vision-language model nests it in text_config)."""
    return _get(config, "text_config") or config


def config_layers(config) -> int | None:
    """The decoder layer count of a config (None: no config, or it does not say)."""
    layers = _get(_text(config), "num_hidden_layers")
    return layers if isinstance(layers, int) else None


def experts_per_layer(config) -> int | None:
    """Routed experts per MoE layer, by the first key the config (its text_config first) names with a
    positive count (None: it names none, not a Mixture-of-Experts config)."""
    values = (_get(c, k) for c in (_text(config), config) for k in EXPERT_COUNT_KEYS)
    return next((v for v in values if _positive_int(v)), None)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def atoms_per_expert(config) -> int | None:
    """A routed expert's intermediate size I (its atoms), by the first of EXPERT_WIDTH_KEYS the config
    has; None when that is not one positive int (e.g. a width per modality: checked after loading)."""
    text = _text(config)
    value = next((_get(text, k) for k in EXPERT_WIDTH_KEYS if _get(text, k) is not None), None)
    return value if _positive_int(value) else None


def check_atoms_in_config(atoms: Iterable[tuple[int, int | str, int]], config: Any) -> None:
    """Range-check (layer, expert, atom) triples against the config alone; a one-line UserError names the first
    bad entry and the valid range. Shared experts' widths differ by family: their atoms are checked after loading,
    as are layers without routed experts (dense or hybrid layers).

    >>> check_atoms_in_config([(1, 68, 3)], {"num_hidden_layers": 48, "num_experts": 128, "moe_intermediate_size": 768})
    """
    layers, experts, width = config_layers(config), experts_per_layer(config), atoms_per_expert(config)
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


def expert_count(config) -> int:
    """`experts_per_layer`, 0 for a config that names no routed experts (not a Mixture-of-Experts model)."""
    return experts_per_layer(config) or 0


def checkpoint_path(spec: str | None) -> str:
    """The local folder (or hub id) of MODEL; None or "demo" is the built-in demo's saved copy
    (built on first use: that imports torch)."""
    if spec is None or (spec == DEMO_SPEC and not os.path.exists(spec)):  # a folder named demo wins
        if (default_cache_dir() / "config.json").is_file():  # built before: named without torch
            return str(default_cache_dir())
        from .demo import demo_checkpoint

        return str(demo_checkpoint())
    return os.path.expanduser(spec)


def read_config_json(folder: str | os.PathLike) -> dict[str, Any] | None:
    """`folder`/config.json as a dict; None when there is none or it is not a JSON object (the
    loader's reader, AutoConfig, then says what is wrong with it)."""
    path = Path(folder).expanduser() / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def local_config(spec: str | os.PathLike | None) -> SimpleNamespace | None:
    """An attribute view of a local checkpoint folder's config.json, for the checks before loading.

    None for the built-in demo (its config is built by transformers), hub ids, a folder without a
    readable config.json, and a config with its own code (auto_map: AutoConfig decides, with
    --trust-remote-code): those checks take the loader's config instead (`loading.load_config`).
    The view holds what the file says, without transformers' defaults for missing fields."""
    if spec is None or not Path(spec).expanduser().is_dir():
        return None
    data = read_config_json(spec)
    if data is None or "auto_map" in data:
        return None
    return json.loads(json.dumps(data), object_hook=lambda d: SimpleNamespace(**d))
