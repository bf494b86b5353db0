"""A transformers experts implementation that also measures every expert's down_proj output.

Registered in `ALL_EXPERTS_FUNCTIONS` under `CAPTURE_IMPLEMENTATION`. It is transformers'
`grouped_mm` forward with one extra step: after the down projection (bias included, before
the routing weight, paper Eq. 6) the per-row maxima go to the module's `ExpertTracker`.
Modules without an active tracker run the plain grouped_mm forward. Without autograd the routing
weight multiplies the rows in place (the same values, one (S, hidden) tensor fewer).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS, ExpertsInterface, _grouped_linear

from ..runs.errors import UserError
from .tracker import ExpertTracker

CAPTURE_IMPLEMENTATION = "superexperts_capture"

# id(experts module) -> (tracker, function returning the current batch's global token offset).
# Filled and emptied by `capture.session.capture`; empty outside it.
ACTIVE: dict[int, tuple[ExpertTracker, Callable[[], int]]] = {}

# Edits of a fused experts module's rows, sorted by expert: fn(expert_ids_sorted, x) -> x, on the
# down projection's output (ablations, measurements) or its input h (activation fake-quantization).
# id(module) -> edit; installed and removed only through `output_edit` / `input_edit`.
RowEdit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_OUTPUT_EDITS: dict[int, RowEdit] = {}
_INPUT_EDITS: dict[int, RowEdit] = {}


@contextlib.contextmanager
def _installed(registry: dict[int, RowEdit], experts: nn.Module,
               edit: Callable[[torch.Tensor, torch.Tensor, RowEdit | None], torch.Tensor]) -> Iterator[None]:
    key = id(experts)
    previous = registry.get(key)
    registry[key] = lambda ids, x: edit(ids, x, previous)
    try:
        yield
    finally:
        if previous is None:
            registry.pop(key, None)
        else:
            registry[key] = previous


def output_edit(experts: nn.Module, edit: Callable[[torch.Tensor, torch.Tensor, RowEdit | None], torch.Tensor]
                ) -> contextlib.AbstractContextManager[None]:
    """Apply `edit(expert_ids, down_out, previous)` to a fused experts module's down_proj output (before
    the routing weight) while the context is open; `previous` is the edit already active there (or None),
    so nested ablations compose. The tensor an edit returns belongs to the forward, which may scale it in
    place. Restored on exit, also on exceptions. Takes effect with
    `fused_implementation` (the stock transformers forwards have no edit point)."""
    return _installed(_OUTPUT_EDITS, experts, edit)


def input_edit(experts: nn.Module, edit: Callable[[torch.Tensor, torch.Tensor, RowEdit | None], torch.Tensor]
               ) -> contextlib.AbstractContextManager[None]:
    """Like `output_edit`, on the down projection's input h (S, intermediate) - where the SE outliers are."""
    return _installed(_INPUT_EDITS, experts, edit)


def active_output_edits() -> int:
    """How many experts modules have an output edit installed (0 outside every ablation)."""
    return len(_OUTPUT_EDITS)


@contextlib.contextmanager
def fused_implementation(experts_modules: list[nn.Module]) -> Iterator[None]:
    """Point each fused experts module's config at this implementation, then restore."""
    configs = {id(m.config): m.config for m in experts_modules}
    saved = {k: c._experts_implementation_internal for k, c in configs.items()}
    try:
        for c in configs.values():
            c._experts_implementation_internal = CAPTURE_IMPLEMENTATION
        yield
    finally:
        for k, c in configs.items():
            c._experts_implementation_internal = saved[k]


def capture_experts_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,  # (tokens, hidden)
    top_k_index: torch.Tensor,  # (tokens, top_k)
    top_k_weights: torch.Tensor,  # (tokens, top_k)
) -> torch.Tensor:
    if getattr(self, "_is_expert_parallel", False):
        raise UserError("expert-parallel experts cannot be profiled in place; load the model without EP.")
    device = hidden_states.device
    num_top_k = top_k_index.size(-1)
    num_tokens, hidden_dim = hidden_states.shape

    # Sort (token, expert) pairs by expert so each expert's rows are contiguous for grouped_mm.
    expert_ids, perm = torch.sort(top_k_index.reshape(-1))  # (S,)
    token_of_row = perm // num_top_k  # (S,) row in hidden_states
    x = hidden_states[token_of_row]  # (S, hidden)
    counts = torch.bincount(expert_ids, minlength=self.num_experts)
    offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)

    if self.has_gate:
        weights, biases = self.gate_up_proj, getattr(self, "gate_up_proj_bias", None)
    else:
        weights, biases = self.up_proj, getattr(self, "up_proj_bias", None)
    bias = biases[expert_ids] if self.has_bias else None
    h = _grouped_linear(x, weights, offsets, bias=bias, is_transposed=self.is_transposed)
    h = self._apply_gate(h) if self.has_gate else self.act_fn(h)  # (S, intermediate)
    in_edit = _INPUT_EDITS.get(id(self))
    if in_edit is not None:
        h = in_edit(expert_ids, h)

    bias = self.down_proj_bias[expert_ids] if self.has_bias else None
    out = _grouped_linear(h, self.down_proj, offsets, bias=bias, is_transposed=self.is_transposed)  # (S, hidden)

    row_weights = top_k_weights.reshape(-1)[perm]  # (S,) routing weight of each row
    active = ACTIVE.get(id(self))
    if active is not None:
        tracker, token_offset = active
        tracker.update(expert_ids, out, h, token_of_row + token_offset(), row_weights)
    edit = _OUTPUT_EDITS.get(id(self))
    if edit is not None:
        out = edit(expert_ids, out)

    if self.has_post_expert_norm:
        out = self.post_expert_norm(out)
    w = row_weights.unsqueeze(-1)
    # Weighted in place when no backward needs `out` and the product keeps its dtype: the same values as
    # `out * w` with one (S, hidden) tensor fewer, whose new memory made transformers' forward 6-10% slower on a
    # CPU (profile benchmark).
    in_place = not torch.is_grad_enabled() and torch.result_type(out, w) == out.dtype
    weighted = out.mul_(w) if in_place else out * w  # (S, hidden)
    inv_perm = torch.empty_like(perm)
    inv_perm[perm] = torch.arange(perm.numel(), device=device)
    final = weighted[inv_perm].view(num_tokens, num_top_k, hidden_dim).sum(dim=1)
    return final.to(hidden_states.dtype)


if CAPTURE_IMPLEMENTATION not in ALL_EXPERTS_FUNCTIONS:
    ExpertsInterface.register(CAPTURE_IMPLEMENTATION, capture_experts_forward)
