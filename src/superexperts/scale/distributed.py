"""Data-parallel profiling with torch.distributed: each rank streams its share of the batches.

Launch with `torchrun --nproc_per_node N` (backend nccl on CUDA, gloo on CPU). Every rank reads
the checkpoint layer by layer and profiles a contiguous block of batches with their global
token offsets; the per-layer tracker states are all-gathered and merged in rank order (MAX for
maxima, with the argmax channel/token taken from the rank holding the maximum; SUM for counts),
which is exactly what one process would have recorded over all batches.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..capture import Capture
from .state import State, merge_layer_states


def init_from_env() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); True when distributed."""
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def merge_across_ranks(states: dict[int, State], cap: Capture) -> dict[int, State]:
    """All ranks' {layer: state}, merged layer by layer in rank order (every rank gets the result)."""
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, states)  # small: a few numbers per expert and layer
    return {layer: merge_layer_states([g[layer] for g in gathered], cap.massive[layer].k) for layer in states}
