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


def _spawned_rank(rank: int, world: int, init_file: str, result_file: str, args: tuple, kwargs: dict) -> None:
    from .layerwise import stream_profile

    torch.set_num_threads(1)  # ranks share the machine's cores
    backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= world else "gloo"
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        if backend == "nccl":
            kwargs = kwargs | {"device": f"cuda:{rank}"}
        prof = stream_profile(*args, **kwargs)
        if rank == 0:  # every rank holds the merged profile; rank 0 writes
            torch.save(prof, result_file)
    finally:
        dist.destroy_process_group()


def spawn_stream_profile(nprocs: int, checkpoint_dir, input_ids: torch.Tensor, *, start_method: str = "spawn",
                         **kwargs):  # fmt: skip
    """`stream_profile` on `nprocs` local processes (no torchrun needed); returns the merged Profile.

    `start_method="fork"` starts faster (no re-import) but is only safe on CPU.

    >>> prof = spawn_stream_profile(2, "ckpt/", input_ids, batch_size=4)
    """
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="se-dist-") as tmp:
        init_file, result_file = f"{tmp}/init", f"{tmp}/profile.pt"
        args = (nprocs, init_file, result_file, (checkpoint_dir, input_ids), kwargs)
        mp.start_processes(_spawned_rank, args=args, nprocs=nprocs, join=True, start_method=start_method)
        return torch.load(result_file, weights_only=False)
