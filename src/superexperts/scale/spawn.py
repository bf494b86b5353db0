"""Data-parallel `stream_profile` on local processes, without torchrun (tests, one-machine runs)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from .layerwise import stream_profile


def _rank_main(rank: int, world: int, init_file: str, result_file: str, args: tuple, kwargs: dict) -> None:
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
        mp.start_processes(_rank_main, args=args, nprocs=nprocs, join=True, start_method=start_method)
        return torch.load(result_file, weights_only=False)
