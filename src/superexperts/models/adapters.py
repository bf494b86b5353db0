"""Where the experts live: one generic walk over a loaded model, driven by small tables.

Structure is introspected (parameter shapes, the flags `@use_experts_implementation` sets),
never matched on class names, so a new transformers family with the usual layout works
unchanged. Three layouts of routed experts exist:

- ``fused``: a transformers 5.x ``...Experts`` module with 3-D ``gate_up_proj``/``up_proj`` and
  ``down_proj`` parameters, dispatched through ``ALL_EXPERTS_FUNCTIONS`` (Qwen2/3-MoE, Mixtral,
  OLMoE, DeepSeek-V2/V3, GLM4-MoE, GPT-OSS, ...);
- ``modulelist``: an ``nn.ModuleList`` of per-expert MLPs with a ``down_proj`` or ``w2`` Linear
  (transformers 4.x and trust_remote_code checkpoints);
- ``dense_routed``: Llama4's experts, which run every expert on every token with the routing
  score already multiplied into the input.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..runs.errors import UserError

# Names tried, in order, for each role. Adding a family with other names = one entry here.
DOWN_NAMES = ("down_proj", "w2", "fc2")
SHARED_NAMES = ("shared_experts", "shared_expert", "shared_mlp")
ROUTER_NAMES = ("gate", "router")
# Where a decoder layer keeps its MLP or MoE block; hybrids (Nemotron-H) call it `mixer`, a name their
# Mamba and attention layers share, so a dense MLP is recognised by its down projection, not its name.
MLP_NAMES = ("mlp", "block_sparse_moe", "feed_forward", "moe", "mixer")

Layout = Literal["fused", "modulelist", "dense_routed"]


@dataclass(frozen=True)
class MoEBlock:
    """The routed experts of one decoder layer, and what sits beside them."""

    layer: int
    block: nn.Module  # the MoE module the decoder layer calls
    experts: nn.Module  # fused Experts module, or nn.ModuleList of expert MLPs
    layout: Layout
    num_experts: int
    router: nn.Module | None
    shared: nn.Module | None = None  # shared expert MLP (DeepSeek, Qwen2-MoE, GLM4-MoE, Llama4)

    def expert_down(self, expert: int) -> nn.Linear:
        """The down projection Linear of one expert (modulelist layout only)."""
        return _child(self.experts[expert], DOWN_NAMES)  # type: ignore[index,return-value]

    @property
    def shared_down(self) -> nn.Linear | None:
        return _child(self.shared, DOWN_NAMES) if self.shared is not None else None


@dataclass(frozen=True)
class DenseMLP:
    """A decoder layer whose MLP is dense (DeepSeek first_k_dense_replace, Qwen mlp_only_layers)."""

    layer: int
    mlp: nn.Module
    down: nn.Linear


@dataclass(frozen=True)
class ModelMap:
    """Every decoder layer of a model, resolved to its MoE block or dense MLP."""

    layers: nn.ModuleList
    moe: tuple[MoEBlock, ...]
    dense: tuple[DenseMLP, ...]
    other: tuple[int, ...] = ()  # layers with neither (hybrids' Mamba / attention-only layers)
    family: str = ""  # config.model_type, for messages

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def block(self, layer: int) -> MoEBlock:
        for b in self.moe:
            if b.layer == layer:
                return b
        moe_layers = [b.layer for b in self.moe]
        raise UserError(f"layer {layer} has no routed experts; MoE layers are {moe_layers}.")


def _child(module: nn.Module | None, names: tuple[str, ...]) -> nn.Module | None:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Module):
            return child
    return None


def _is_fused_experts(module: nn.Module) -> bool:
    down = getattr(module, "down_proj", None)
    up = getattr(module, "gate_up_proj", getattr(module, "up_proj", None))
    return isinstance(down, torch.Tensor) and down.dim() == 3 and isinstance(up, torch.Tensor) and up.dim() == 3


def _is_expert_list(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.ModuleList)
        and len(module) > 1
        and all(isinstance(_child(m, DOWN_NAMES), nn.Linear) for m in module)
    )


def _find_experts(layer: nn.Module) -> tuple[nn.Module, nn.Module, Layout] | None:
    """(block, experts, layout) of a decoder layer, or None when it has no routed experts."""
    for name, module in layer.named_modules():
        if not name or "attn" in name or "attention" in name:
            continue
        if _is_fused_experts(module) or _is_expert_list(module):
            parent = layer.get_submodule(name.rpartition(".")[0]) if "." in name else layer
            if _is_expert_list(module):
                return parent, module, "modulelist"
            # Decorated fused experts carry `has_gate`; Llama4's undecorated ones do not and
            # take inputs already scaled by the routing score (their forward takes the hidden states only).
            if hasattr(module, "has_gate"):
                return parent, module, "fused"
            if len(inspect.signature(module.forward).parameters) > 1:  # routing in, own loop: nothing to measure in
                raise UserError(f"{type(module).__name__} at {name}: routed experts with their own forward "
                                "(not transformers' experts registry) are not supported.")  # fmt: skip
            return parent, module, "dense_routed"
    return None


def _num_experts(experts: nn.Module, layout: Layout) -> int:
    if layout == "modulelist":
        return len(experts)  # type: ignore[arg-type]
    return int(experts.down_proj.shape[0])


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers: of the ModuleLists whose items hold experts or an MLP, one with routed
    experts first (a vision or audio tower of a tiny language model can be the larger), then the largest."""
    candidates = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0 or _is_expert_list(module):
            continue
        moe = any(_find_experts(m) is not None for m in module)
        if moe or any(_child(m, MLP_NAMES) is not None for m in module):
            candidates.append((moe, sum(p.numel() for p in module.parameters()), name, module))
    if not candidates:
        raise UserError(
            f"{type(model).__name__}: no decoder layers with an MLP or experts found; superexperts needs a "
            "transformers MoE language model (Qwen2/3-MoE, DeepSeek-V2/V3, Mixtral, OLMoE, GPT-OSS, GLM4-MoE, Llama4)."
        )
    return max(candidates, key=lambda c: c[:3])[3]


def map_model(model: nn.Module) -> ModelMap:
    """Resolve every decoder layer to its MoE block or dense MLP.

    >>> mm = map_model(model)
    >>> [(b.layer, b.num_experts, b.layout) for b in mm.moe][:1]
    [(0, 8, 'fused')]
    """
    layers = find_decoder_layers(model)
    moe, dense, other = [], [], []
    for idx, layer in enumerate(layers):
        found = _find_experts(layer)
        if found is not None:
            block, experts, layout = found
            moe.append(
                MoEBlock(
                    layer=idx,
                    block=block,
                    experts=experts,
                    layout=layout,
                    num_experts=_num_experts(experts, layout),
                    router=_child(block, ROUTER_NAMES),
                    shared=_shared_expert(block),
                )
            )
            continue
        mlp = next((m for m in (_child(layer, (n,)) for n in MLP_NAMES) if isinstance(_child(m, DOWN_NAMES), nn.Linear)),
                   None)  # fmt: skip
        if mlp is not None:
            dense.append(DenseMLP(layer=idx, mlp=mlp, down=_child(mlp, DOWN_NAMES)))
        else:
            other.append(idx)
    if not moe:
        found_mlp = type(_child(layers[0], MLP_NAMES)).__name__
        raise UserError(
            f"{type(model).__name__} has no routed experts (its MLP is {found_mlp}); superexperts "
            "works on Mixture-of-Experts models such as Qwen3-MoE, DeepSeek-V2/V3, Mixtral, OLMoE, GPT-OSS."
        )
    family = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    return ModelMap(layers=layers, moe=tuple(moe), dense=tuple(dense), other=tuple(other), family=family)


def _shared_expert(block: nn.Module) -> nn.Module | None:
    shared = _child(block, SHARED_NAMES)
    return shared if isinstance(_child(shared, DOWN_NAMES), nn.Linear) else None


def input_device(model: nn.Module) -> torch.device:
    """Where a model's input ids go: its input embeddings' device, also with a device map."""
    return param_device(model.get_input_embeddings())


def param_device(module: nn.Module, device: torch.device | str | None = None) -> torch.device:
    """`device` when given, else where the module computes: its first parameter's device (per block
    under a device map), or, for weights offloaded to the meta device, the device accelerate runs
    the module on (tagged by device_map.mark_execution_devices)."""
    if device is not None:
        return torch.device(device)
    placed = next(module.parameters()).device
    if placed.type == "meta":
        from .device_map import EXECUTION_ATTR

        return getattr(module, EXECUTION_ATTR, placed)
    return placed
