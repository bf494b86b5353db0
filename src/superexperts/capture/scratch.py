"""Work buffers shared by the trackers of one capture, reused across layers and batches.

On a CPU new memory is what a tracker pays most for: a tensor asks the allocator for pages that are
first-touched (and, in a VM, often first backed by the host), which cost more than the reductions that read them.
Inside the profile benchmark the two new (S, I) tensors of each atom update took about half of its time, and
np.partition's copy of a 30k-element sample 2.5-8 ms where the selection itself takes 0.05 ms. Trackers update
one after another (one layer at a time), so one buffer per (use, device) serves every layer.
"""

from __future__ import annotations

import math

import torch


class Scratch:
    """Buffers by (use, device), grown to the largest request seen; `release` frees them. A buffer's contents
    are the caller's until it next takes the same use: two live values never share a use name."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.device], torch.Tensor] = {}

    def take(self, use: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        size = math.prod(shape) * dtype.itemsize
        device = torch.device(device)
        buffer = self._buffers.get((use, device))
        if buffer is None or buffer.numel() < size:
            buffer = self._buffers[(use, device)] = torch.empty(size, dtype=torch.uint8, device=device)
        return buffer[:size].view(dtype).view(shape)

    def release(self) -> None:
        self._buffers.clear()
