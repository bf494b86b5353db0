"""`stream_sinks`: attention-sink metrics of a checkpoint read one decoder layer at a time.

The same SinkResult as `sinks.measure.measure_sinks` on the loaded model. Each layer is loaded
once; every condition (original, then each ablation) pushes all of its samples through it from
its own hidden-state store, with that condition's experts of this layer ablated, while
`record_sinks` records the layer's attention on the sink keys. The original runs first, so the
per-query masses D_sink compares against are those of the same layer and sample; they are kept
for that layer only. Optionally the attention maps of a few layers (`sinks.maps`) are recorded
in the same pass.

    >>> result, maps = stream_sinks("Qwen3-30B-A3B/", ids, {"super": [(1, 68), (2, 92)]}, device="cuda")
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..capture.batching import default_budget
from ..evaluate.ablate import ablate
from ..evaluate.sinks import metrics
from ..evaluate.sinks.attention import LayerSinks, SinkRecording, record_sinks
from ..evaluate.sinks.maps import MAX_MAP_TOKENS, Maps
from ..evaluate.sinks.measure import SinkResult, Sums, accumulate, check_input, check_keys, finish_condition
from ..evaluate.sinks.study import (
    MAP_TOKENS,
    ROUTER_NOT_STREAMED,
    SinkStudy,
    assemble_study,
    layerwise_conditions,
)
from ..models.adapters import map_model
from ..models.checkpoints.files import release_freed_memory
from ..models.checkpoints.reader import Checkpoint
from ..models.checkpoints.skeleton import LayerCall, build_skeleton, layers_path
from ..models.experts import Expert
from ..runs.errors import UserError
from ..runs.progress import progress_bar
from .activations import ActivationStore
from .layerwise import LayerReader, embed, load_layer, load_outer


class _Run:
    """One condition's samples, their hidden states between layers and the experts it ablates."""

    def __init__(self, experts: list[Expert], batches: list[torch.Tensor], store: ActivationStore) -> None:
        self.experts, self.batches, self.store = experts, batches, store

    def through(self, layer: nn.Module, index: int, calls: dict[tuple, dict[int, LayerCall]], rec: SinkRecording,
                skeleton: nn.Module, mode: str) -> list[tuple[LayerSinks, float]]:  # fmt: skip
        """Every sample through the loaded `layer`: (what record_sinks saw, max |output|) per sample."""
        here = [e for e in self.experts if e[0] == index]
        seen = []
        with ablate(skeleton, here, mode=mode) if here else contextlib.nullcontext():
            for b, ids in enumerate(self.batches):
                args, kwargs = calls[tuple(ids.shape)][index]
                out = layer(self.store.read(b), *args, **kwargs)
                hidden = out[0] if isinstance(out, (tuple, list)) else out
                if index not in rec.layers:
                    raise UserError(f"{type(layer).__name__} never called the attention registry, so its attention "
                                    "cannot be recorded; this model cannot run sinks --stream.")  # fmt: skip
                seen.append((rec.layers.pop(index), float(hidden.detach().abs().amax())))  # as sinks.hidden does
                self.store.write(b, hidden)
        self.store.commit()
        return seen


def _layers(ckpt: Checkpoint, skeleton: nn.Module, model_map, runs: list[_Run], *, device: torch.device,
            dtype: torch.dtype, progress: bool, desc: str, prefetch: bool | None = None):  # fmt: skip
    """Yield (index, layer) with the layer's weights loaded; free them and the runs' old hidden states after.
    `prefetch`: read the next layer while this one computes (`LayerReader`; None = on for accelerators)."""
    todo = range(model_map.num_layers)
    with (LayerReader(ckpt, todo, device=device, prefetch=prefetch) as reader,
          progress_bar(todo, desc=desc, unit="layer", disable=not progress) as bar):  # fmt: skip
        for index in bar:
            layer = model_map.layers[index]
            load_layer(ckpt, skeleton, layer, index, device, dtype, reader=reader)
            yield index, layer
            layer.to("meta")  # free the weights before the next layer loads
            release_freed_memory()
            for r in runs:
                r.store.drop_old()


def _top_k_keys(ckpt: Checkpoint, skeleton: nn.Module, model_map, path: str, batches: list[torch.Tensor], k: int,
                spill: Path, **where) -> list[int]:  # fmt: skip
    """`measure.choose_sink_keys` streamed: a first pass of the original model (the checkpoint is read
    twice). Per sample the layers are summed in order, then the samples, as the in-memory sum does."""
    store = ActivationStore(device=where["device"], budget_bytes=default_budget(where["device"]), spill_dir=spill)
    with record_sinks(skeleton, [(0,)], key_mass=True) as rec:
        calls = embed(skeleton, path, batches, store, write=True)
        run = _Run([], batches, store)
        per_sample: list = [0] * len(batches)
        for index, layer in _layers(ckpt, skeleton, model_map, [run], desc="choosing sink keys", **where):
            for b, (ls, _) in enumerate(run.through(layer, index, calls, rec, skeleton, "zero")):
                per_sample[b] = per_sample[b] + ls.key_mass.sum(dim=(0, 1))
    total = None
    for mass in per_sample:
        total = mass if total is None else total + mass
    return metrics.top_k_keys(total, k)


def stream_sinks(checkpoint_dir: str | os.PathLike, input_ids: torch.Tensor,
                 conditions: Mapping[str, list[Expert]] | None = None, *, sink_keys: Sequence[int] = (0,),
                 top_k: int | None = None, mode: str = "zero", epsilon: float = metrics.EPSILON, map_ids: torch.Tensor | None = None,
                 map_layers: Sequence[int] = (), map_conditions: Mapping[str, list[Expert]] | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 trust_remote_code: bool = False, progress: bool = False,
                 prefetch: bool | None = None) -> tuple[SinkResult, Maps]:  # fmt: skip
    """`measure_sinks` (and `attention_maps` of `map_ids` when given) for a checkpoint folder
    streamed layer by layer: (SinkResult, maps {"original" and each map condition: {layer: (heads, T, T)}}).
    With `top_k` the checkpoint is read twice: once to choose the keys, once to measure. `prefetch`:
    read the next layer while this one computes (`LayerReader`; None = on for accelerators)."""
    batches = check_input(input_ids)  # one sample at a time, as measure_sinks runs them
    if map_ids is not None and map_ids.shape[-1] > MAX_MAP_TOKENS:
        raise UserError(f"attention maps are T x T per head; the input has {map_ids.shape[-1]} tokens, the cap is "
                        f"{MAX_MAP_TOKENS}. Pass a shorter --text (sink metrics have no such cap).")  # fmt: skip
    folder, device = Path(checkpoint_dir), torch.device(device or "cpu")
    if not folder.is_dir():
        raise UserError(f"--stream reads a local checkpoint folder; {folder} is not one (download it first).")
    skeleton, dtype = build_skeleton(folder, dtype, trust_remote_code=trust_remote_code)
    model_map, path = map_model(skeleton), layers_path(skeleton)
    ckpt = Checkpoint.open(folder, skeleton, layers_prefix=path)
    named = {"original": []} | {k: list(v) for k, v in (conditions or {}).items()}
    mapped = {} if map_ids is None else {"original": []} | {k: list(v) for k, v in (map_conditions or {}).items()}
    sums = {name: Sums() for name in named}
    maps: Maps = {name: {} for name in mapped}
    where = {"device": device, "dtype": dtype, "progress": progress, "prefetch": prefetch}
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        spill = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="se-spill-")))
        load_outer(ckpt, skeleton, path, device, dtype)
        if top_k:
            sink_keys = _top_k_keys(ckpt, skeleton, model_map, path, batches, top_k, spill / "keys", **where)
        keys = check_keys(sink_keys, input_ids.shape[1])
        key_sets = [tuple(keys), (0,)]  # the last set is always the first token, for the sink rate
        # entered before the embedding pass, so the masks handed to each layer are built for the recorder
        rec = stack.enter_context(record_sinks(skeleton, key_sets))
        budget = default_budget(device) // (len(named) + len(mapped))
        calls: dict[tuple, dict[int, LayerCall]] = {}

        def run(tag: str, experts: list[Expert], samples: list[torch.Tensor]) -> _Run:
            store = ActivationStore(device=device, budget_bytes=budget, spill_dir=spill / tag)
            calls.update(embed(skeleton, path, samples, store, write=True))
            return _Run(experts, samples, store)

        runs = {name: run(f"c{i}", experts, batches) for i, (name, experts) in enumerate(named.items())}
        map_runs = {name: run(f"m{i}", experts, [map_ids[:1]]) for i, (name, experts) in enumerate(mapped.items())}
        every = [*runs.values(), *map_runs.values()]
        for index, layer in _layers(ckpt, skeleton, model_map, every, desc="streaming layers", **where):
            reference: list[LayerSinks] = []  # the original's masses of this layer, per sample
            for name, r in runs.items():
                for b, (ls, peak) in enumerate(r.through(layer, index, calls, rec, skeleton, mode)):
                    original = None if name == "original" else {index: reference[b]}
                    accumulate(sums[name], {index: ls}, {index: peak}, original)
                    if name == "original":
                        reference.append(ls)
            if index in map_layers:  # full T x T maps of the short map input, this layer only
                rec.maps = frozenset([index])
            for name, r in map_runs.items():
                (ls, _), = r.through(layer, index, calls, rec, skeleton, mode)
                if index in map_layers:
                    maps[name][index] = ls.probs[0].cpu()
            rec.maps = frozenset()
    implementation = f"{rec.implementation} (model configured: {rec.configured})"
    results = [finish_condition(name, named[name], sums[name], model_map.num_layers) for name in named]
    return SinkResult(sink_keys=keys, conditions=results, implementation=implementation, epsilon=epsilon), maps


def streamed_sinks_study(checkpoint_dir: str, input_ids: torch.Tensor, *, super_experts: Sequence[Expert],
                         controls: Mapping[str, list[Expert]], map_layers: Sequence[int], map_heads: Sequence[int],
                         tokens: Sequence[str] | None = None, sink_keys: Sequence[int] = (0,),
                         top_k: int | None = None, mode: str = "zero", epsilon: float = metrics.EPSILON, device=None, dtype=None, trust_remote_code: bool = False,
                         progress: bool = False, prefetch: bool | None = None) -> SinkStudy:  # fmt: skip
    """`sinks_study` of a checkpoint folder read one decoder layer at a time (`stream_sinks`): the same
    sink metrics and attention maps; the router view is not measured (ROUTER_NOT_STREAMED)."""
    conditions = layerwise_conditions(list(super_experts)) | dict(controls)
    result, maps = stream_sinks(checkpoint_dir, input_ids, conditions, sink_keys=sink_keys, top_k=top_k, mode=mode,
                                epsilon=epsilon,
                                map_ids=input_ids[:1, :MAP_TOKENS], map_layers=map_layers,
                                map_conditions={"super": list(super_experts)}, device=device, dtype=dtype,
                                trust_remote_code=trust_remote_code, progress=progress, prefetch=prefetch)  # fmt: skip
    return assemble_study(result, maps, None, super_experts=super_experts, map_layers=map_layers,
                          map_heads=map_heads, tokens=tokens, not_measured=[ROUTER_NOT_STREAMED])  # fmt: skip
