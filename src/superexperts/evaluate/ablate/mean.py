"""`mean` mode: an expert's output is replaced by its mean output over calibration tokens.

Owen et al. 2025: replacing massive activations by their mean is harmless where zeroing is
catastrophic, so `zero` overstates what lossy compression of an SE costs. "Output" is the
down projection output (bias included) before the routing weight, the quantity the paper
measures (Eq. 6); the routing weight still multiplies the mean.

Fused experts are edited through `capture.experts_fn.output_edit` (the capturing experts
implementation is switched on while the ablation is active); Linear down projections
(ModuleList experts, shared experts) through forward hooks; Llama4's dense-routed experts
through a forward hook on the experts module, on the rows of tokens routed to the expert.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ...capture import experts_fn
from ...models.adapters import ModelMap, MoEBlock, map_model, param_device
from ...models.experts import Expert
from ...runs.errors import UserError

Means = dict[Expert, torch.Tensor]  # (layer, expert | "shared") -> (hidden,) float32


def _dense_routed_rows(module_input: torch.Tensor, num_experts: int) -> torch.Tensor:
    """(E, tokens) bool: Llama4 feeds zero rows to experts a token was not routed to."""
    return module_input.reshape(num_experts, -1, module_input.shape[-1]).abs().amax(-1) > 0


class Sums:
    """Running per-expert sums and counts of down_proj outputs for one unit (routed or shared)."""

    def __init__(self, n: int, hidden: int, device: torch.device) -> None:
        self.sum = torch.zeros(n, hidden, dtype=torch.float32, device=device)
        self.count = torch.zeros(n, dtype=torch.int64, device=device)

    def add(self, ids: torch.Tensor, out: torch.Tensor) -> None:  # ids (S,), out (S, hidden)
        self.sum.index_add_(0, ids, out.float())
        self.count += torch.bincount(ids, minlength=self.count.numel())

    def means(self) -> torch.Tensor:  # experts that saw no token keep a zero mean
        return self.sum / self.count.clamp(min=1).unsqueeze(-1)


def _linear_sum_hook(sums: Sums, index: int):
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        out = output.reshape(-1, output.shape[-1])
        sums.add(torch.full((out.shape[0],), index, device=out.device), out)

    return hook


def _install_sums(block: MoEBlock, sums: Sums, stack: contextlib.ExitStack) -> None:
    if block.layout == "fused":
        # Measures the raw output: an edit already active here is replaced while the sums are taken.
        stack.enter_context(experts_fn.output_edit(block.experts, lambda ids, out, _prev: (sums.add(ids, out), out)[1]))
    elif block.layout == "modulelist":
        for e in range(block.num_experts):
            stack.callback(block.expert_down(e).register_forward_hook(_linear_sum_hook(sums, e)).remove)
    else:

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            routed = _dense_routed_rows(args[0], block.num_experts)
            ids, rows = routed.nonzero(as_tuple=True)
            sums.add(ids, output.reshape(block.num_experts, -1, output.shape[-1])[ids, rows])

        stack.callback(block.experts.register_forward_hook(hook).remove)


@torch.no_grad()
def expert_mean_outputs(model: nn.Module, input_ids: torch.Tensor | Iterable[torch.Tensor], *,
                        batch_size: int = 1) -> Means:
    """Mean down_proj output of every routed and shared expert over the tokens it received.

    >>> means = expert_mean_outputs(model, calib_ids)   # calib_ids: LongTensor [N, T]
    >>> with ablate(model, [(1, 68)], mode="mean", means=means): ...
    """
    model_map = map_model(model)
    device = next(model.parameters()).device
    hidden = model.get_input_embeddings().weight.shape[-1]
    # Sums live beside each block's weights (models split over devices keep working).
    routed = {b.layer: Sums(b.num_experts, hidden, param_device(b.experts)) for b in model_map.moe}
    shared = {b.layer: Sums(1, hidden, param_device(b.shared)) for b in model_map.moe if b.shared is not None}
    batches = input_ids.split(batch_size) if isinstance(input_ids, torch.Tensor) else input_ids
    with contextlib.ExitStack() as stack:
        for b in model_map.moe:
            _install_sums(b, routed[b.layer], stack)
            if b.layer in shared:
                stack.callback(b.shared_down.register_forward_hook(_linear_sum_hook(shared[b.layer], 0)).remove)
        stack.enter_context(experts_fn.fused_implementation([b.experts for b in model_map.moe if b.layout == "fused"]))
        for batch in batches:
            model(input_ids=batch.to(device), use_cache=False)
    means: Means = {}
    for layer, sums in routed.items():
        means |= {(layer, e): m for e, m in enumerate(sums.means())}
    means |= {(layer, "shared"): sums.means()[0] for layer, sums in shared.items()}
    return means


def _replace_rows(ids: torch.Tensor, out: torch.Tensor, table: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Rows whose expert is `chosen` get that expert's mean (ids (S,), out (S, H), table (E, H))."""
    return torch.where(chosen[ids].unsqueeze(-1), table[ids].to(out.dtype), out)


def _edit_fused(block: MoEBlock, table: torch.Tensor, chosen: torch.Tensor, stack: contextlib.ExitStack) -> None:
    def edit(ids: torch.Tensor, out: torch.Tensor, previous) -> torch.Tensor:  # composes with an active ablation
        return _replace_rows(ids, previous(ids, out) if previous else out, table, chosen)

    stack.enter_context(experts_fn.output_edit(block.experts, edit))
    stack.enter_context(experts_fn.fused_implementation([block.experts]))


def _edit_dense_routed(block: MoEBlock, table: torch.Tensor, chosen: torch.Tensor,
                       stack: contextlib.ExitStack) -> None:
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        routed = _dense_routed_rows(args[0], block.num_experts) & chosen.unsqueeze(-1)  # (E, tokens)
        out = output.reshape(block.num_experts, -1, output.shape[-1])
        out = torch.where(routed.unsqueeze(-1), table.unsqueeze(1).to(out.device, out.dtype), out)
        return out.reshape(output.shape)

    stack.callback(block.experts.register_forward_hook(hook).remove)


def _constant_output_hook(mean: torch.Tensor):
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return mean.to(device=output.device, dtype=output.dtype).expand_as(output)

    return hook


def _check_means(experts: list[Expert], means: Means | None) -> None:
    if means is None:
        raise UserError("mode 'mean' needs the experts' mean outputs: means=expert_mean_outputs(model, calib_ids).")
    missing = [f"{layer}:{e}" for layer, e in experts if (layer, e) not in means]
    if missing:
        raise UserError(f"no mean output for {', '.join(missing)}; recompute expert_mean_outputs on this model.")


def apply_mean(model_map: ModelMap, experts: list[Expert], undo: list[Callable[[], None]],
               means: Means | None = None) -> None:
    """Replace each expert's output by its mean; push the edit removals onto `undo`."""
    _check_means(experts, means)
    stack = contextlib.ExitStack()
    undo.append(stack.close)
    per_layer: dict[int, list[int]] = {}
    for layer, expert in experts:
        block = model_map.block(layer)
        if expert == "shared":
            stack.callback(block.shared_down.register_forward_hook(_constant_output_hook(means[(layer, "shared")])).remove)
        elif block.layout == "modulelist":
            hook = _constant_output_hook(means[(layer, expert)])
            stack.callback(block.expert_down(expert).register_forward_hook(hook).remove)
        else:
            per_layer.setdefault(layer, []).append(int(expert))
    for layer, chosen_ids in per_layer.items():
        block = model_map.block(layer)
        device = block.experts.down_proj.device
        chosen = torch.zeros(block.num_experts, dtype=torch.bool, device=device)
        chosen[chosen_ids] = True
        table = torch.zeros(block.num_experts, means[(layer, chosen_ids[0])].shape[-1], device=device)
        for e in chosen_ids:
            table[e] = means[(layer, e)].to(device)
        (_edit_fused if block.layout == "fused" else _edit_dense_routed)(block, table, chosen, stack)
