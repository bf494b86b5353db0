"""`stream_profile`: profile a checkpoint one decoder layer at a time, never loading the model.

For each layer: load its tensors from the shards onto the device, push ALL calibration batches
through it (recording statistics with the same capture machinery as `superexperts.profile`),
free it, go on. The checkpoint is read once, whatever the number of batches (accelerate's
offloading would re-read every layer for every batch). Results are identical to the in-memory
profile: each layer sees bit-identical inputs and each tracker the batches in the same order.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..batching import AUTO, default_budget, parse_batch_size, resolve_batch_size, stable_memory_budget
from ..capture import Capture, capture
from ..checkpoint_files import release_freed_memory
from ..errors import UserError
from ..loading import Loaded
from ..models.adapters import map_model
from ..profile import LAYER_STATS_METHOD, Profile, describe_model, expert_table, layer_table
from ..progress import progress_bar
from . import distributed
from .activations import ActivationStore
from .checkpoint import Checkpoint
from .resume import RunState, fingerprint
from .skeleton import LayerCall, build_skeleton, layer_inputs, layers_path
from .state import layer_state, restore_layer


def _check_ids(input_ids: torch.Tensor, batch_size: int) -> None:
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}.")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[1] < 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise UserError(f"input_ids must be a LongTensor [samples, seq_len >= 2], got {shape}.")
    if input_ids.shape[0] == 0:
        raise UserError("no calibration data: input_ids is empty; pass at least one [1, seq_len] window.")


def embed(skeleton: nn.Module, path: str, batches: list[torch.Tensor], store: ActivationStore,
           write: bool) -> dict[tuple, dict[int, LayerCall]]:  # fmt: skip
    """Write each batch's layer-0 input into `store` (when `write`); the layer calls per batch shape."""
    calls: dict[tuple, dict[int, LayerCall]] = {}
    for b, ids in enumerate(batches):
        hidden, layer_calls = layer_inputs(skeleton, path, ids.to(store.device))
        calls.setdefault(tuple(ids.shape), layer_calls)  # masks/positions depend on the shape only
        if write:
            store.write(b, hidden)
    if write:
        store.commit()
    return calls


def run_layer(layer: nn.Module, index: int, cap: Capture | None, batches: list[torch.Tensor], offsets: list[int],
               calls: dict[tuple, dict[int, LayerCall]], store: ActivationStore) -> list[torch.Tensor]:  # fmt: skip
    """All batches through one layer; returns the per-batch median magnitudes (for exact merging)."""
    medians = []
    for b, ids in enumerate(batches):
        args, kwargs = calls[tuple(ids.shape)][index]
        if cap is None:  # plain forward (evaluation)
            out = layer(store.read(b), *args, **kwargs)
        else:
            cap.token_offset = offsets[b] * ids.shape[1]
            tracker = cap.massive[index]
            saved, tracker.median_sum = tracker.median_sum, torch.zeros_like(tracker.median_sum)
            out = layer(store.read(b), *args, **kwargs)
            medians.append(tracker.median_sum)  # 0 + this batch's median, exactly
            tracker.median_sum = saved + tracker.median_sum  # the same float32 addition the tracker does
        store.write(b, out[0] if isinstance(out, (tuple, list)) else out)
    store.commit()
    return medians


def load_layer(ckpt: Checkpoint, skeleton: nn.Module, layer: nn.Module, index: int,
                device: torch.device, dtype: torch.dtype) -> None:  # fmt: skip
    ckpt.load(skeleton, ckpt.layer_keys.get(index, []), device=device, dtype=dtype)
    missing = [n for n, p in layer.named_parameters() if p.is_meta]
    if missing:
        raise UserError(f"{ckpt.folder} has no weights for layer {index} ({missing[0]}, ...); "
                        "the checkpoint does not match its config.json or a shard is missing.")  # fmt: skip
    layer.to(device)  # buffers that are not in the checkpoint


def load_outer(ckpt: Checkpoint, skeleton: nn.Module, path: str, device: torch.device, dtype: torch.dtype) -> None:
    """Embeddings and everything beside the decoder layers that the base model's forward touches."""
    ckpt.load(skeleton, ckpt.outer_keys, device=device, dtype=dtype)
    parent = skeleton.get_submodule(path.rpartition(".")[0]) if "." in path else skeleton
    layers = skeleton.get_submodule(path)
    for child in parent.children():
        if child is not layers and not any(p.is_meta for p in child.parameters()):
            child.to(device)


def _stream_layers(ckpt: Checkpoint, skeleton: nn.Module, model_map, cap: Capture, batches: list[torch.Tensor],
                   offsets: list[int], calls: dict, store: ActivationStore, state: RunState | None, done: dict,
                   *, device: torch.device, dtype: torch.dtype, progress: bool) -> dict[int, dict]:  # fmt: skip
    """Load, run, record and free every layer not in `done`; {layer: tracker state} of all layers."""
    states = dict(done)  # small: a few numbers per expert
    todo = range(len(done), model_map.num_layers)
    with progress_bar(todo, desc="streaming layers", unit="layer", disable=not progress) as bar:
        for index in bar:
            layer = model_map.layers[index]
            load_layer(ckpt, skeleton, layer, index, device, dtype)
            medians = run_layer(layer, index, cap, batches, offsets, calls, store)
            layer.to("meta")  # free the weights before the next layer loads
            release_freed_memory()
            states[index] = layer_state(cap, index, medians)
            if state is not None:
                state.save_layer(index, states[index], complete=index == todo[-1])
            store.drop_old(keep_current=index != todo[-1])  # spilled/persisted inputs of this layer
    return states


def _shard(batches: list[torch.Tensor], rank: int, world: int) -> tuple[list[torch.Tensor], list[int]]:
    """This rank's contiguous block of batches and their global sample offsets."""
    starts = [0]
    for b in batches:
        starts.append(starts[-1] + b.shape[0])
    lo, hi = rank * len(batches) // world, (rank + 1) * len(batches) // world
    return batches[lo:hi], starts[lo:hi]


def stream_profile(
    checkpoint_dir: str | os.PathLike,
    input_ids: torch.Tensor,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int | str = "auto",
    state_dir: str | os.PathLike | None = None,
    resume: bool = False,
    tokenizer=None,
    activation_budget: int | None = None,
    progress: bool = False,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> Profile:
    """Profile a safetensors checkpoint folder layer by layer; same result as `superexperts.profile`.

    Under torch.distributed (e.g. `torchrun --nproc_per_node 2`) each rank profiles a contiguous
    share of the batches and every rank returns the merged profile.

    >>> prof = stream_profile("Qwen3-30B-A3B/", input_ids, device="cuda", dtype=torch.bfloat16,
    ...                       state_dir="state/", resume=True)
    """
    requested = parse_batch_size(batch_size)
    _check_ids(input_ids, 1 if requested == AUTO else requested)
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        raise UserError(f"checkpoint folder not found: {folder}; pass a local folder with config.json and *.safetensors.")
    device = torch.device(device or "cpu")
    skeleton, dtype = build_skeleton(folder, dtype, trust_remote_code=trust_remote_code,
                                     attn_implementation=attn_implementation)  # fmt: skip
    model_map, path = map_model(skeleton), layers_path(skeleton)
    batch_size, batch_meta = resolve_batch_size(requested, skeleton, samples=len(input_ids), seq_len=input_ids.shape[1],
                                                device=device, budget_bytes=stable_memory_budget(device))  # fmt: skip
    ckpt = Checkpoint.open(folder, skeleton, layers_prefix=path)
    distributed.init_from_env()  # under torchrun: join the process group it describes
    rank, world = distributed.rank_and_world()
    batches, offsets = _shard(list(input_ids.split(batch_size)), rank, world)
    settings = {"dtype": str(dtype), "batch_size": batch_size, "rank": rank, "world": world,
                "attn": attn_implementation, "layers": model_map.num_layers}  # fmt: skip
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        state = None
        if state_dir is not None:
            state_path = Path(state_dir) / (f"rank-{rank}" if world > 1 else "")
            state = RunState(state_path, fingerprint(folder, input_ids, settings))
        spill = state.folder if state else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="se-spill-")))
        cap = stack.enter_context(capture(model_map, device=device))
        stack.enter_context(torch.inference_mode())
        done = state.start(resume=resume) if state else {}
        for index, s in done.items():
            restore_layer(cap, index, s)
        store = ActivationStore(device=device, budget_bytes=activation_budget or default_budget(device),
                                spill_dir=spill, persist=state is not None, generation=len(done) if done else -1)  # fmt: skip
        load_outer(ckpt, skeleton, path, device, dtype)
        calls = embed(skeleton, path, batches, store, write=not done)
        states = _stream_layers(ckpt, skeleton, model_map, cap, batches, offsets, calls, store, state, done,
                                device=device, dtype=dtype, progress=progress)  # fmt: skip
        if world > 1:
            for index, merged in distributed.merge_across_ranks(states, cap).items():
                restore_layer(cap, index, merged)
        all_ids = input_ids.cpu()
        meta = _meta(skeleton, model_map, device, dtype, all_ids, batch_size, world, store, time.perf_counter() - start)
        meta |= batch_meta | {"layer_stats_method": LAYER_STATS_METHOD}
        return Profile(expert_table(cap, all_ids, tokenizer), layer_table(cap, all_ids, tokenizer), meta)


def _meta(skeleton, model_map, device, dtype, all_ids, batch_size, world, store, seconds) -> dict[str, Any]:
    return describe_model(skeleton, model_map) | {
        "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "samples": int(all_ids.shape[0]), "seq_len": int(all_ids.shape[1]), "tokens": int(all_ids.numel()),
        "batch_size": batch_size, "profile_seconds": round(seconds, 3), "streamed": True,
        "world_size": world, "spilled_batches": store.spilled_batches,
    }  # fmt: skip


def streaming_profiler(loaded: Loaded, device: torch.device, dtype: torch.dtype, *, state_dir: str | None = None,
                       resume: bool = False) -> Callable[..., Profile]:  # fmt: skip
    """A drop-in for `superexperts.profile(model, input_ids, ...)` that streams `loaded.path`."""

    def profiler(model, input_ids, *, batch_size: int | str = "auto", tokenizer=None, progress: bool = False
                 ) -> Profile:
        return stream_profile(loaded.path, input_ids, device=device, dtype=dtype, batch_size=batch_size,
                              state_dir=state_dir, resume=resume, tokenizer=tokenizer, progress=progress)  # fmt: skip

    return profiler
