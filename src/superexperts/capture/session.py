"""`capture(model)`: one forward pass records every expert, shared expert, dense MLP and hidden state.

Fused experts are measured inside the experts implementation (`experts_fn`); everything that
is an `nn.Linear` (shared experts, dense MLPs, ModuleList experts) through forward hooks on its
down projection; hidden states through forward hooks on the decoder layers. All of it is
removed on exit, also on exceptions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.adapters import ModelMap, MoEBlock, param_device
from ..runs.errors import UserError
from . import experts_fn
from .atoms import AtomTracker, fused_down, linear_down
from .routing import routing_weights
from .scratch import Scratch
from .tracker import ExpertTracker, MassiveTracker, token_rows

UnitKey = tuple[int, str]  # (layer, kind) with kind in routed | shared | dense


@dataclass
class Capture:
    """What one capture session records. Set `token_offset` before each batch."""

    model_map: ModelMap
    experts: dict[UnitKey, ExpertTracker] = field(default_factory=dict)
    massive: dict[int, MassiveTracker] = field(default_factory=dict)
    token_offset: int = 0
    seq_len: int = 0
    batch: int = 0  # windows in the current forward

    def current_offset(self) -> int:
        return self.token_offset

    def start_batch(self, first_sample: int, ids_shape: tuple[int, ...] | torch.Size) -> None:
        """Before each forward: its windows' (batch, seq_len) and the global index of its first window."""
        self.batch, self.seq_len = int(ids_shape[0]), int(ids_shape[1])
        self.token_offset = first_sample * self.seq_len


def _linear_hook(tracker: ExpertTracker, expert: int, cap: Capture, block_input: dict | None = None):
    """Forward hook on a down projection Linear: all its rows belong to `expert`."""

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        down_in = args[0].reshape(-1, args[0].shape[-1])
        down_out = output.reshape(-1, output.shape[-1])
        n = down_out.shape[0]
        if block_input is None:  # every token passes: row r is token r of the batch
            rows = torch.arange(n, device=down_out.device)
        else:  # ModuleList experts see a subset of tokens; find them in the block's input
            rows = _match_rows(block_input["x"], block_input["expert_in"].pop(expert), n)
        weights = None
        if block_input is not None and block_input.get("weights") is not None:
            weights = block_input["weights"][rows, expert]  # (n,) read from the router's output
        ids = torch.full((n,), expert, dtype=torch.int64, device=down_out.device)
        tracker.update(ids, down_out, down_in, rows + cap.token_offset, weights)

    return hook


def _row_hash(x: torch.Tensor) -> torch.Tensor:
    """An exact-bits hash per row: equal rows hash equal (int64 arithmetic wraps, which is fine)."""
    int_type = {2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()]
    bits = x.contiguous().view(int_type).to(torch.int64)  # (rows, hidden)
    gen = torch.Generator().manual_seed(0)
    coeff = torch.randint(1, 2**62, (x.shape[-1],), generator=gen, dtype=torch.int64).to(x.device)
    return (bits * coeff).sum(-1)


def _match_rows(block_x: torch.Tensor, expert_x: torch.Tensor, n: int) -> torch.Tensor:
    """Token index of each row an expert received. Legacy blocks pass `hidden[top_x]`, so each
    expert row is bit-identical to one row of the block input: match them by hash, in O(tokens)."""
    block_hash, order = _row_hash(block_x).sort()
    pos = torch.searchsorted(block_hash, _row_hash(expert_x)).clamp(max=block_hash.numel() - 1)
    return order[pos]


def _install_modulelist(block: MoEBlock, tracker: ExpertTracker, cap: Capture) -> list:
    state: dict = {"x": None, "expert_in": {}, "weights": None}
    handles = [
        block.block.register_forward_pre_hook(
            lambda m, args: state.update(x=args[0].reshape(-1, args[0].shape[-1]), weights=None)
        )
    ]
    if block.router is not None:
        handles.append(block.router.register_forward_hook(
            lambda m, args, out: state.update(weights=routing_weights(block.block, out, block.num_experts))
        ))  # fmt: skip
    for e in range(block.num_experts):
        expert = block.experts[e]  # type: ignore[index]
        handles.append(
            expert.register_forward_pre_hook(
                lambda m, args, e=e: state["expert_in"].__setitem__(e, args[0].reshape(-1, args[0].shape[-1]))
            )
        )
        handles.append(block.expert_down(e).register_forward_hook(_linear_hook(tracker, e, cap, state)))
    return handles


def _install_dense_routed(block: MoEBlock, tracker: ExpertTracker, cap: Capture) -> list:
    """Llama4: experts see (E * tokens, hidden) with the routing score folded into the input;
    rows of an expert that was not selected are all zero and are not counted as routed."""

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        e = block.num_experts
        x = args[0].reshape(e, -1, args[0].shape[-1])
        out = output.reshape(e, -1, output.shape[-1])
        routed = x.abs().amax(-1) > 0  # (E, tokens)
        ids, rows = routed.nonzero(as_tuple=True)
        # The down_proj input is not visible from outside the module; record the expert input.
        tracker.update(ids, out[ids, rows], x[ids, rows], rows + cap.token_offset)

    return [block.experts.register_forward_hook(hook)]


def _layer_output_hook(tracker: MassiveTracker, cap: Capture):
    def hook(module: nn.Module, args: tuple, output) -> None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        found = token_rows(hidden, cap.batch, cap.seq_len) if cap.batch else (hidden, 1)
        if found is None:
            raise UserError(f"{cap.model_map.family}: a decoder layer outputs hidden states of shape "
                            f"{tuple(hidden.shape)}, with no (batch {cap.batch}, tokens {cap.seq_len}) axes to map "
                            "back to tokens; this family's layer statistics are not supported.")  # fmt: skip
        tracker.update(*found[:1], cap.token_offset, streams=found[1])

    return hook


def _attach_atoms(tracker: ExpertTracker, block: MoEBlock, kind: str, scratch: Scratch) -> None:
    """Per-atom statistics beside the expert maxima (capture/atoms.py), with the capture's shared work
    buffers. Llama4's dense-routed experts have none: their down_proj input is not visible from outside."""
    if kind == "shared":
        rows, norms = linear_down([block.shared_down])
    elif block.layout == "fused":
        rows, norms = fused_down(block.experts)
    elif block.layout == "modulelist":
        rows, norms = linear_down([block.expert_down(e) for e in range(block.num_experts)])
    else:
        return
    tracker.atoms = AtomTracker(tracker.num_experts, rows, norms, tracker.max_abs_output.device,
                                routed=kind == "routed", scratch=scratch)  # fmt: skip


@contextlib.contextmanager
def capture(
    model_map: ModelMap, *, top_k_massive: int = 3, device: torch.device | str | None = None, atoms: bool = True
) -> Iterator[Capture]:
    """Record per-expert and per-layer statistics during the forwards run inside the block.

    Trackers live on each module's parameter device, or on `device` when given (layer
    streaming builds the model on the meta device and loads one layer at a time). `atoms`:
    also the per-atom statistics of routed and shared experts (`tracker.atoms`).

    >>> with capture(map_model(model)) as cap:
    ...     cap.token_offset = 0; model(input_ids)
    """
    cap = Capture(model_map=model_map)
    handles: list = []
    fused = [b for b in model_map.moe if b.layout == "fused"]
    scratch = Scratch()  # one set of work buffers for every layer's trackers
    try:
        for b in model_map.moe:
            tracker = ExpertTracker(b.num_experts, param_device(b.experts, device))
            cap.experts[(b.layer, "routed")] = tracker
            if atoms:
                _attach_atoms(tracker, b, "routed", scratch)
            if b.layout == "fused":
                experts_fn.ACTIVE[id(b.experts)] = (tracker, cap.current_offset)
            elif b.layout == "modulelist":
                handles += _install_modulelist(b, tracker, cap)
            else:
                handles += _install_dense_routed(b, tracker, cap)
            if b.shared_down is not None:
                shared = ExpertTracker(1, param_device(b.shared, device))
                cap.experts[(b.layer, "shared")] = shared
                if atoms:
                    _attach_atoms(shared, b, "shared", scratch)
                handles.append(b.shared_down.register_forward_hook(_linear_hook(shared, 0, cap)))
        for d in model_map.dense:
            dense = ExpertTracker(1, param_device(d.mlp, device))
            cap.experts[(d.layer, "dense")] = dense
            handles.append(d.down.register_forward_hook(_linear_hook(dense, 0, cap)))
        for i, layer in enumerate(model_map.layers):
            cap.massive[i] = MassiveTracker(top_k_massive, param_device(layer, device), scratch)
            handles.append(layer.register_forward_hook(_layer_output_hook(cap.massive[i], cap)))
        with experts_fn.fused_implementation([b.experts for b in fused]):
            yield cap
    finally:
        scratch.release()
        for h in handles:
            h.remove()
        for b in fused:
            experts_fn.ACTIVE.pop(id(b.experts), None)
