"""Attention maps before and after pruning, side by side (the paper's Fig. 8).

The maps are T x T per head, so inputs are capped at MAX_MAP_TOKENS tokens; everything else in
this package works without materialising them.

    >>> maps = attention_maps(model, ids[:, :32], layers=[3], conditions={"super": [(1, 68)]})
    >>> fig = plot_maps(maps, layers=[3], heads=[0, 5])
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import torch
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from torch import nn

from ...models.adapters import input_device
from ...models.experts import Expert
from ...runs.errors import UserError
from ..ablate import ablate
from .attention import record_sinks

MAX_MAP_TOKENS = 128

Maps = dict[str, dict[int, torch.Tensor]]  # condition -> layer -> (heads, T, T)


def attention_maps(model: nn.Module, input_ids: torch.Tensor, layers: Sequence[int],
                   conditions: Mapping[str, list[Expert]], *, mode: str = "zero") -> Maps:
    """Full attention probabilities of the first sample for `layers`, per condition ("original" added)."""
    t = input_ids.shape[-1]
    if t > MAX_MAP_TOKENS:
        raise UserError(f"attention maps are T x T per head; the input has {t} tokens, the cap is "
                        f"{MAX_MAP_TOKENS}. Pass a shorter --text (sink metrics have no such cap).")
    ids = input_ids[:1].to(input_device(model))
    out: Maps = {}
    for name, experts in ({"original": []} | dict(conditions)).items():
        pruned = ablate(model, list(experts), mode=mode) if experts else contextlib.nullcontext()
        with pruned, torch.no_grad(), record_sinks(model, maps=layers) as rec:
            model(input_ids=ids, use_cache=False)
        out[name] = {layer: rec.layers[layer].probs[0].cpu() for layer in layers}
    return out


def plot_maps(maps: Maps, layers: Sequence[int], heads: Sequence[int] = (), tokens: Sequence[str] | None = None
              ) -> Figure:
    """One row per (layer, head) plus the head average of each layer, one column per condition."""
    names = list(maps)
    rows = [(layer, h) for layer in layers for h in [*heads, None]]
    fig = Figure(figsize=(3.2 * len(names) + 1.0, 3.0 * len(rows)))
    axes = fig.subplots(len(rows), len(names), squeeze=False)
    fig.subplots_adjust(left=0.1, right=0.85, bottom=0.08, top=0.95, wspace=0.45, hspace=0.5)  # no layout engine: fast
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)  # small weights stay visible next to the sink
    image = None
    for r, (layer, head) in enumerate(rows):
        for c, name in enumerate(names):
            probs = maps[name][layer]
            grid = probs.mean(0) if head is None else probs[head]
            ax = axes[r][c]
            image = ax.imshow(grid.numpy(), cmap="viridis", norm=norm, interpolation="nearest")
            ax.set_title(f"{name}: layer {layer}, {'head avg' if head is None else f'head {head}'}", fontsize=8)
            _label_axes(ax, tokens, tuple(grid.shape))
    fig.colorbar(image, cax=fig.add_axes((0.89, 0.3, 0.02, 0.4)), label="attention probability")
    return fig


def _label_axes(ax, tokens: Sequence[str] | None, shape: tuple[int, int]) -> None:
    """Token labels on an axis whose length is the token count; keys can be more than the tokens
    (DeepSeek-V4 attends to compressed keys too), and such an axis keeps numeric ticks."""
    ax.set_xlabel("key", fontsize=7)
    ax.set_ylabel("query", fontsize=7)
    ax.tick_params(labelsize=6)
    queries, keys = shape
    if tokens is not None and keys == queries <= 32:
        ax.set_xticks(range(keys), [str(s) for s in tokens[:keys]], rotation=90, fontsize=5)
    if tokens is not None and queries <= 32:
        ax.set_yticks(range(queries), [str(s) for s in tokens[:queries]], fontsize=5)
