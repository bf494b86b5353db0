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
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

import torch
from torch import nn

from ..capture import Capture, capture
from ..capture.batching import (
    AUTO,
    default_budget,
    parse_batch_size,
    resolve_batch_size,
    stable_memory_budget,
)
from ..capture.profile import (
    LAYER_STATS_METHOD,
    Profile,
    atom_table,
    describe_model,
    expert_table,
    layer_table,
)
from ..models.adapters import map_model
from ..models.checkpoints.files import release_freed_memory
from ..models.checkpoints.reader import Checkpoint
from ..models.checkpoints.skeleton import LayerCall, build_skeleton, layer_inputs, layers_path
from ..models.loading import Loaded
from ..models.options import PREFETCH
from ..runs.errors import UserError
from ..runs.progress import progress_bar
from . import distributed
from .activations import ActivationStore
from .resume import RunState, fingerprint
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
            cap.start_batch(offsets[b], ids.shape)
            tracker = cap.massive[index]
            saved, tracker.median_sum = tracker.median_sum, torch.zeros_like(tracker.median_sum)
            out = layer(store.read(b), *args, **kwargs)
            medians.append(tracker.median_sum)  # 0 + this batch's median, exactly
            tracker.median_sum = saved + tracker.median_sum  # the same float32 addition the tracker does
        store.write(b, out[0] if isinstance(out, (tuple, list)) else out)
    store.commit()
    return medians


def prefetch_of(flag: str | None) -> bool | None:
    """--prefetch auto|on|off (None: not given, auto) as LayerReader's `prefetch`."""
    return PREFETCH[flag or "auto"]


def prefetch_used(prefetch: bool | None, device: torch.device) -> bool:
    """Whether a LayerReader on `device` reads ahead: auto (None) is on for accelerators only."""
    return device.type != "cpu" if prefetch is None else prefetch


class LayerReader:
    """Decoder layers' tensors read from the shards into host memory, in order, for `load_layer`.

    With `prefetch`, one background thread reads layer i+1 while layer i computes (safetensors
    reads and torch copies release the GIL), so disk time hides behind compute: at most two
    layers' host tensors exist at once (the one being placed, the one being read). Without it,
    the same `Checkpoint.read` runs inline, chunk by chunk, as each layer is placed.

    `prefetch=None` (auto) turns it on for accelerators only. On CPU the compute is the CPU:
    with the few cores a CPU run typically has (2 on the test machines), a reader thread competes with the layer's
    matmuls for them and holds a second layer in RAM, which on CPU is also the compute memory;
    `prefetch=True` forces it (tests use that to check that it changes nothing). An error while
    reading (a missing shard, a non-float tensor) is raised in the calling thread, unchanged.

    >>> with LayerReader(ckpt, range(n), device=torch.device("cuda")) as reader:
    ...     load_layer(ckpt, skeleton, layers[0], 0, device, dtype, reader=reader)
    """

    def __init__(self, ckpt: Checkpoint, indices, *, device: torch.device, prefetch: bool | None = None) -> None:
        self.ckpt, self.order = ckpt, list(indices)
        self.pin = device.type == "cuda"  # page-locked host tensors: the copy to the GPU is asynchronous
        self.prefetch = prefetch_used(prefetch, device)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="se-layer-reader") if self.prefetch else None
        self.pending: tuple[int, Future] | None = None
        self.lock = threading.Lock()
        self.held = self.peak_held = 0  # layers whose host tensors exist (read or being read, not yet placed)
        self.reads: list[int] = []  # layer indices in the order reading started

    def take(self, index: int) -> Iterator[dict[str, torch.Tensor]]:
        """Layer `index`'s chunks for `Checkpoint.place`; starts reading the next layer."""
        if self.pool is None:  # inline: each chunk is read as `place` asks for it
            self._hold()
            return self._drain(self._read(index))
        if self.pending is not None and self.pending[0] == index:
            future = self.pending[1]
        else:  # first call, or out of order: read it now
            self._cancel()
            future = self._submit(index)
        self.pending = None
        try:
            chunks = future.result()  # re-raises the reader's exception here, in the caller's thread
        except BaseException:
            self._release()
            raise
        later = self.order.index(index) + 1 if index in self.order else len(self.order)
        if later < len(self.order):
            self.pending = (self.order[later], self._submit(self.order[later]))
        return self._drain(chunks)

    def _read(self, index: int) -> Iterator[dict[str, torch.Tensor]]:
        with self.lock:
            self.reads.append(index)
        return self.ckpt.read(self.ckpt.layer_keys.get(index, []), pin=self.pin)

    def _submit(self, index: int) -> Future:
        self._hold()  # counted from submission: the thread may start at once
        return self.pool.submit(lambda: list(self._read(index)))

    def _drain(self, chunks: Iterator | list) -> Iterator[dict[str, torch.Tensor]]:
        """Hand the chunks over one by one, keeping no reference; then count the layer as placed."""
        try:
            if isinstance(chunks, list):
                while chunks:
                    yield chunks.pop(0)
            else:
                yield from chunks
        finally:
            self._release()

    def _hold(self) -> None:
        with self.lock:
            self.held += 1
            self.peak_held = max(self.peak_held, self.held)

    def _release(self) -> None:
        with self.lock:
            self.held -= 1

    def _cancel(self) -> None:
        if self.pending is not None:
            future = self.pending[1]
            self.pending = None
            if not future.cancel():  # already reading: wait for it and drop the layer (or its error)
                with contextlib.suppress(Exception):
                    future.result()
            self._release()

    def close(self) -> None:
        self._cancel()
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_layer(ckpt: Checkpoint, skeleton: nn.Module, layer: nn.Module, index: int,
                device: torch.device, dtype: torch.dtype, *, reader: LayerReader | None = None) -> None:  # fmt: skip
    """Place layer `index`'s weights on `device` (read inline, or taken from `reader`'s prefetch)."""
    reader = reader or LayerReader(ckpt, [index], device=device, prefetch=False)
    ckpt.place(skeleton, reader.take(index), device=device, dtype=dtype)
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
                   *, device: torch.device, dtype: torch.dtype, progress: bool,
                   prefetch: bool | None = None) -> dict[int, dict]:  # fmt: skip
    """Load, run, record and free every layer not in `done`; {layer: tracker state} of all layers."""
    states = dict(done)  # small: a few numbers per expert
    todo = range(len(done), model_map.num_layers)
    with (LayerReader(ckpt, todo, device=device, prefetch=prefetch) as reader,
          progress_bar(todo, desc="streaming layers", unit="layer", disable=not progress) as bar):  # fmt: skip
        for index in bar:
            layer = model_map.layers[index]
            load_layer(ckpt, skeleton, layer, index, device, dtype, reader=reader)
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
    prefetch: bool | None = None,
    atoms: bool = True,
) -> Profile:
    """Profile a safetensors checkpoint folder layer by layer; same result as `superexperts.profile`.

    Under torch.distributed (e.g. `torchrun --nproc_per_node 2`) each rank profiles a contiguous
    share of the batches and every rank returns the merged profile. `prefetch` reads the next
    layer from disk while the current one computes (`LayerReader`; None = on for accelerators).
    `atoms`: also the per-atom statistics, as in `superexperts.profile`.

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
    if not atoms:  # a state saved with atoms resumes only a run with them (older states' fingerprints unchanged)
        settings["atoms"] = False
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        state = None
        if state_dir is not None:
            state_path = Path(state_dir) / (f"rank-{rank}" if world > 1 else "")
            state = RunState(state_path, fingerprint(folder, input_ids, settings))
        spill = state.folder if state else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="se-spill-")))
        cap = stack.enter_context(capture(model_map, device=device, atoms=atoms))
        stack.enter_context(torch.inference_mode())
        done = state.start(resume=resume) if state else {}
        for index, s in done.items():
            restore_layer(cap, index, s)
        store = ActivationStore(device=device, budget_bytes=activation_budget or default_budget(device),
                                spill_dir=spill, persist=state is not None, generation=len(done) if done else -1)  # fmt: skip
        load_outer(ckpt, skeleton, path, device, dtype)
        calls = embed(skeleton, path, batches, store, write=not done)
        states = _stream_layers(ckpt, skeleton, model_map, cap, batches, offsets, calls, store, state, done,
                                device=device, dtype=dtype, progress=progress, prefetch=prefetch)  # fmt: skip
        if world > 1:
            for index, merged in distributed.merge_across_ranks(states, cap).items():
                restore_layer(cap, index, merged)
        all_ids = input_ids.cpu()
        meta = _meta(skeleton, model_map, device, dtype, all_ids, batch_size, world, store, time.perf_counter() - start)
        meta |= batch_meta | {"layer_stats_method": LAYER_STATS_METHOD, "prefetch": prefetch_used(prefetch, device),
                              "atoms": atoms}  # fmt: skip
        return Profile(expert_table(cap, all_ids, tokenizer), layer_table(cap, all_ids, tokenizer), meta,
                       atom_table(cap, all_ids.shape[1]))


def _meta(skeleton, model_map, device, dtype, all_ids, batch_size, world, store, seconds) -> dict[str, Any]:
    return describe_model(skeleton, model_map) | {
        "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "samples": int(all_ids.shape[0]), "seq_len": int(all_ids.shape[1]), "tokens": int(all_ids.numel()),
        "batch_size": batch_size, "profile_seconds": round(seconds, 3), "streamed": True,
        "world_size": world, "spilled_batches": store.spilled_batches,
    }  # fmt: skip


def streaming_profiler(loaded: Loaded, device: torch.device, dtype: torch.dtype, *, state_dir: str | None = None,
                       resume: bool = False, prefetch: bool | None = None) -> Callable[..., Profile]:  # fmt: skip
    """A drop-in for `superexperts.profile(model, input_ids, ...)` that streams `loaded.path`."""

    def profiler(model, input_ids, *, batch_size: int | str = "auto", tokenizer=None, progress: bool = False,
                 atoms: bool = True) -> Profile:  # fmt: skip
        return stream_profile(loaded.path, input_ids, device=device, dtype=dtype, batch_size=batch_size,
                              state_dir=state_dir, resume=resume, tokenizer=tokenizer, progress=progress,
                              prefetch=prefetch, atoms=atoms)  # fmt: skip

    return profiler
