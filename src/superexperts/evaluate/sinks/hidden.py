"""Max |hidden state| after each decoder layer: the massive activation the sink depends on.

    >>> with max_hidden(model) as peaks:
    ...     model(input_ids)
    >>> peaks[2]          # max |h| over batch, positions and channels after layer 2
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ...models.adapters import find_decoder_layers


@contextlib.contextmanager
def max_hidden(model: nn.Module) -> Iterator[dict[int, float]]:
    """Forward hooks on every decoder layer recording the running max |output|; removed on exit."""
    peaks: dict[int, float] = {}

    def hook(layer: int):
        def record(module: nn.Module, args: tuple, output) -> None:
            h = output[0] if isinstance(output, (tuple, list)) else output
            value = float(h.detach().abs().amax()) if isinstance(h, torch.Tensor) else float("nan")
            peaks[layer] = max(peaks.get(layer, value), value)

        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(find_decoder_layers(model))]
    try:
        yield peaks
    finally:
        for h in handles:
            h.remove()
