"""Checks on layer and head choices, run before any forward pass."""

from __future__ import annotations

from collections.abc import Sequence

from ...runs.errors import UserError


def check_layers(num_layers: int, layers: Sequence[int]) -> list[int]:
    bad = [layer for layer in layers if not 0 <= layer < num_layers]
    if bad:
        raise UserError(f"--layers {bad} out of range; the model has layers 0..{num_layers - 1}.")
    return sorted(set(layers))


def config_sizes(config, *, loaded: bool = True) -> tuple[int, int] | None:
    """(decoder layers, query heads per layer) from a model config (or its text_config). A config.json
    read before loading (`loaded=False`) may leave a field to transformers' defaults: None then (the
    loaded model's config is checked again)."""
    text = getattr(config, "text_config", None) or config
    layers, heads = getattr(text, "num_hidden_layers", None), getattr(text, "num_attention_heads", None)
    if (layers is None or heads is None) and not loaded:
        return None
    if layers is None or heads is None:
        raise UserError(f"{type(config).__name__} has no num_hidden_layers/num_attention_heads; "
                        "superexperts sinks needs a transformers decoder config.")
    return int(layers), int(heads)


def check_heads(num_heads: int, heads: Sequence[int]) -> list[int]:
    bad = [head for head in heads if not 0 <= head < num_heads]
    if bad:
        raise UserError(f"--heads {bad} out of range; the model has heads 0..{num_heads - 1}.")
    return list(heads)


def default_map_layers(num_layers: int, experts: Sequence[tuple[int, int | str]],
                       attention: Sequence[int] | None = None) -> list[int]:  # fmt: skip
    """The layer right after the last SE (where the sink should have formed) and the last layer; with
    `attention` (the layers that have attention, in hybrids), the first attention layer from each."""
    after = min(max(layer for layer, _ in experts) + 2, num_layers - 1)
    wanted = {after, num_layers - 1}
    if attention is None:
        return sorted(wanted)
    if not attention:
        raise UserError("the model has no attention layers on this input; superexperts sinks measures attention.")
    return sorted({next((a for a in attention if a >= w), max(attention)) for w in wanted})


def check_attention_layers(layers: Sequence[int], attention: Sequence[int]) -> None:
    """--layers of a hybrid must have attention (Mamba and MLP-only layers have no attention map)."""
    bad = [layer for layer in layers if layer not in attention]
    if bad:
        raise UserError(f"--layers {bad} have no attention (Mamba or MLP-only layers); layers with attention: "
                        f"{list(attention)}.")
