"""`heapr(model, input_ids)`: HEAPr's atom scores from one forward and one backward per batch.

HEAPr (Li et al. 2025, arXiv 2509.22299; code LLIKKE/HEAPr) ranks atomic experts by output-space
second-order information. With g_t = dL/d(expert output) (the routing weight inside it), the
curvature along atom k is w_k^T (mean_t g g^T) w_k = mean_t (dL/da[t, k])^2, so

    heapr[k] = mean over routed t of a[t, k]^2  x  mean over routed t of (dL/da[t, k])^2

with L the model's own next-token loss. a is read in the forward and dL/da by a tensor hook on the
same activation during the backward: autograd on the experts function (`experts_fn.input_edit`) or on
a ModuleList expert's down Linear input, never a second copy of the model. Parameters get no
gradients (they are switched off for the pass and restored); the input embeddings are made the leaf
that carries the graph. Routed experts only: shared experts are left out, as HEAPr does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..models.adapters import MoEBlock, input_device, map_model, param_device
from ..runs.errors import UserError
from . import experts_fn


class HeaprSums:
    """Running sums over routed rows of a^2 and (dL/da)^2 for E experts of width I."""

    def __init__(self, num_experts: int, device: torch.device) -> None:
        acc = torch.float32 if device.type == "mps" else torch.float64
        self.num_experts, self.device, self.acc = num_experts, device, acc
        self.act_sq = torch.empty(0, dtype=acc, device=device)  # (E, I)
        self.grad_sq = torch.empty(0, dtype=acc, device=device)  # (E, I)
        self.rows = torch.zeros(num_experts, dtype=torch.int64, device=device)  # (E,) routed rows seen

    def _sum(self, total: torch.Tensor, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().reshape(-1, x.shape[-1])  # (S, I)
        if total.numel() == 0:
            total = torch.zeros(self.num_experts, x.shape[-1], dtype=self.acc, device=self.device)
        return total.index_add_(0, ids.to(self.device), x.to(self.device, self.acc).square())

    def observe(self, ids: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Record a (..., I), S rows of experts `ids` (S,), and hook its gradient; returns `a` unchanged.
        The hook goes on `a` itself: a view of it would never receive the gradient."""
        self.act_sq = self._sum(self.act_sq, ids, a)
        self.rows += torch.bincount(ids, minlength=self.num_experts).to(self.device)
        if a.requires_grad:
            a.register_hook(lambda g: self._grad(ids, g))
        return a

    def _grad(self, ids: torch.Tensor, g: torch.Tensor) -> None:
        self.grad_sq = self._sum(self.grad_sq, ids, g)

    def scores(self) -> np.ndarray:
        """(E, I) mean a^2 x mean (dL/da)^2; 0 for an expert no calibration token reached."""
        if self.act_sq.numel() == 0 or self.grad_sq.numel() == 0:
            raise UserError("heapr saw no gradient through the experts; check the model computes a loss from "
                            "input_ids (a causal LM) and is not frozen behind torch.no_grad inside its forward.")  # fmt: skip
        rows = self.rows.clamp(min=1).to(self.acc).unsqueeze(-1)
        return ((self.act_sq / rows) * (self.grad_sq / rows)).cpu().numpy()


@contextlib.contextmanager
def _observed(block: MoEBlock, sums: HeaprSums) -> Iterator[None]:
    """Route every routed activation of one block through `sums.observe` while the context is open."""
    if block.layout == "fused":
        def edit(ids, h, previous):
            return sums.observe(ids, previous(ids, h) if previous is not None else h)

        with experts_fn.input_edit(block.experts, edit):
            yield
        return
    handles = []
    for e in range(block.num_experts):
        def pre_hook(module, args, e=e):
            a = args[0]
            sums.observe(torch.full((a.numel() // a.shape[-1],), e, dtype=torch.int64, device=a.device), a)

        handles.append(block.expert_down(e).register_forward_pre_hook(pre_hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _gradients_to_activations_only(model: nn.Module) -> Iterator[None]:
    """No parameter gradients (no weight-sized buffers, no weight-gradient matmuls); the input embeddings'
    output is the leaf that requires grad, so the graph reaches every layer's activations."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    handle = model.get_input_embeddings().register_forward_hook(lambda m, args, out: out.detach().requires_grad_())
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with torch.enable_grad():
            yield
    finally:
        handle.remove()
        for p, flag in flags:
            p.requires_grad_(flag)


def heapr(model: nn.Module, input_ids: torch.Tensor, *, batch_size: int = 1) -> pd.DataFrame:
    """HEAPr scores of every routed atom: DataFrame(layer, expert, atom, heapr, rank), `rank` 1 = the
    highest over all routed atoms of the model (HEAPr prunes globally, lowest first).

    The loss is the model's own (labels = input_ids: mean next-token NLL of each batch).

    >>> scores = superexperts.heapr(model, calib.input_ids, batch_size=4)
    >>> scores.nsmallest(5, "heapr")  # what HEAPr would prune first
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise UserError("heapr needs input_ids as a LongTensor [samples, seq_len >= 2].")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}.")
    model_map = map_model(model)
    blocks = [b for b in model_map.moe if b.layout in ("fused", "modulelist")]
    if not blocks:
        raise UserError("heapr needs the experts' intermediate activations; this model's experts (Llama4's "
                        "dense-routed layout) do not expose them.")  # fmt: skip
    sums = {b.layer: HeaprSums(b.num_experts, param_device(b.experts)) for b in blocks}
    device = input_device(model)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_gradients_to_activations_only(model))
        stack.enter_context(experts_fn.fused_implementation([b.experts for b in blocks if b.layout == "fused"]))
        for b in blocks:
            stack.enter_context(_observed(b, sums[b.layer]))
        for batch in input_ids.split(batch_size):
            batch = batch.to(device)
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            loss.backward()
    return _table(blocks, sums)


def _table(blocks: list[MoEBlock], sums: dict[int, HeaprSums]) -> pd.DataFrame:
    parts = []
    for b in blocks:
        scores = sums[b.layer].scores()  # (E, I)
        e, width = scores.shape
        parts.append(pd.DataFrame({"layer": np.full(e * width, b.layer, dtype=np.int32),
                                   "expert": np.repeat(np.arange(e, dtype=np.int32), width),
                                   "atom": np.tile(np.arange(width, dtype=np.int32), e),
                                   "heapr": scores.ravel()}))  # fmt: skip
    table = pd.concat(parts, ignore_index=True)
    table["rank"] = table["heapr"].rank(ascending=False, method="first").astype(np.int64)
    return table
