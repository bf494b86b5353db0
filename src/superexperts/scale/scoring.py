"""Perplexity of a checkpoint, optionally with experts ablated, streamed layer by layer.

The same numbers as `evaluate.perplexity(model, ...)` on the loaded model (inside
`ablate(model, experts, mode=...)` when experts are given): every window goes through each layer
in turn; after the last layer the model's own forward computes the logits (final norm, lm_head,
any logit scaling), with the decoder layers replaced by a stub that hands back the streamed
hidden states, and `evaluate.perplexity.window_nll` scores them.

    >>> stream_perplexity("Qwen3-30B-A3B/", ids, experts=[(1, 68), (2, 92)], seq_len=2048)["perplexity"]
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..capture.batching import default_budget
from ..evaluate.ablate import ablate
from ..evaluate.ablate.zero import apply_zero
from ..evaluate.perplexity import check_vocab, perplexity_windows, window_nll
from ..models.adapters import map_model
from ..models.checkpoints.files import release_freed_memory
from ..models.checkpoints.reader import Checkpoint
from ..models.checkpoints.skeleton import build_skeleton, layers_path
from ..runs.errors import UserError
from .activations import ActivationStore
from .layerwise import LayerReader, embed, load_layer, load_outer, run_layer


class _Replay(nn.Module):
    """Stands in for decoder layer `index`: the last one returns the streamed final hidden states."""

    def __init__(self, last: bool, final: dict) -> None:
        super().__init__()
        self.last, self.final = last, final

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.final["hidden"] if self.last else hidden_states


@contextlib.contextmanager
def _replaying(layers: nn.ModuleList, final: dict) -> Iterator[None]:
    saved = list(layers)
    try:
        for i in range(len(layers)):
            layers[i] = _Replay(i == len(layers) - 1, final)
        yield
    finally:
        for i, layer in enumerate(saved):
            layers[i] = layer


def _load_head(ckpt: Checkpoint, skeleton: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    ckpt.load(skeleton, ckpt.head_keys, device=device, dtype=dtype)
    head = skeleton.get_output_embeddings()
    if any(p.is_meta for p in head.parameters()):
        skeleton.tie_weights()  # tied to the (loaded) input embeddings
    if any(p.is_meta for p in head.parameters()):
        raise UserError(f"{ckpt.folder} has no lm_head weights and the config does not tie them to the embeddings.")


def stream_perplexity(checkpoint_dir: str | os.PathLike, token_ids: torch.Tensor, *, experts=None, mode: str = "zero",
                      means=None, seq_len: int = 2048, batch_size: int = 1, max_windows: int | None = None,
                      device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                      progress: bool = False, prefetch: bool | None = None) -> dict:  # fmt: skip
    """`evaluate.perplexity` for a checkpoint folder read one layer at a time (same dict).
    `prefetch`: read the next layer while this one computes (`LayerReader`; None = on for accelerators)."""
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}.")
    folder, device = Path(checkpoint_dir), torch.device(device or "cpu")
    skeleton, dtype = build_skeleton(folder, dtype)
    windows = perplexity_windows(token_ids, seq_len, max_windows)
    check_vocab(skeleton, windows)
    model_map, path = map_model(skeleton), layers_path(skeleton)
    ckpt = Checkpoint.open(folder, skeleton, layers_prefix=path)
    batches = list(windows.split(batch_size))
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        # mean/skip act through hooks that persist across loads; zero is re-applied to each loaded layer
        handle = stack.enter_context(ablate(skeleton, experts, mode=mode, means=means)) if experts else None
        spill = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="se-spill-")))
        store = ActivationStore(device=device, budget_bytes=default_budget(device), spill_dir=spill)
        load_outer(ckpt, skeleton, path, device, dtype)
        calls = embed(skeleton, path, batches, store, write=True)
        reader = stack.enter_context(LayerReader(ckpt, range(model_map.num_layers), device=device, prefetch=prefetch))
        for index in tqdm(range(model_map.num_layers), desc="streaming layers", unit="layer", disable=not progress):
            layer = model_map.layers[index]
            load_layer(ckpt, skeleton, layer, index, device, dtype, reader=reader)
            if handle is not None and mode == "zero":
                apply_zero(model_map, [e for e in handle.experts if e[0] == index], [], None)
            run_layer(layer, index, None, batches, [], calls, store)
            layer.to("meta")
            release_freed_memory()
            store.drop_old()
        _load_head(ckpt, skeleton, device, dtype)
        final: dict = {}
        nll_sum = 0.0
        with _replaying(model_map.layers, final):
            for b, batch in enumerate(batches):
                final["hidden"] = store.read(b)
                nll_sum += float(window_nll(skeleton, batch.to(device)).sum())
    tokens_scored = len(windows) * (seq_len - 1)
    mean_nll = nll_sum / tokens_scored
    return {"perplexity": math.exp(mean_nll) if mean_nll < 709 else math.inf, "nll_sum": nll_sum,
            "tokens_scored": tokens_scored, "windows": len(windows), "seq_len": seq_len, "streamed": True}  # fmt: skip
