"""The module names compression tools see for each expert, from the model and its checkpoint.

Two namings exist for one expert, and a protect list carries both:

- the model's: transformers module names, with fused experts linearized as
  `<experts module>.<E>.{gate_proj,up_proj,down_proj}` - what llm-compressor's `LinearExperts`
  (and `SequentialLlama4TextMoe`) create for calibration - and ModuleList / shared experts as
  they are (`mlp.shared_experts.down_proj`);
- the checkpoint's: its own weight keys without the tensor suffix, found with transformers'
  key rules (`get_model_conversion_mapping`), e.g. Mixtral's `block_sparse_moe.experts.3.w2`,
  which loaders and tools that read the hub layout (GPTQModel, AutoRound on 4.x models) use.
  Checkpoints that store experts fused (GPT-OSS, Llama4) have no per-expert key.

Only the model skeleton (meta device, no weights) and the key list are read.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from torch import nn
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

from ..models.adapters import ModelMap, MoEBlock
from ..models.checkpoints.export import star_regex
from ..models.checkpoints.files import INDEX_NAME, read_header
from ..models.experts import Expert
from ..runs.errors import UserError


@dataclass
class ExpertModules:
    """Module names of one expert (routed index, or 'shared'), model naming first."""

    down: list[str] = field(default_factory=list)  # its down projection
    linears: list[str] = field(default_factory=list)  # every projection (gate, up, down)

    def add(self, name: str, is_down: bool) -> None:
        for target in (self.linears, self.down) if is_down else (self.linears,):
            if name not in target:
                target.append(name)


def checkpoint_keys(folder: Path) -> list[str] | None:
    """Weight keys of a checkpoint folder: its index, else the safetensors headers; None when absent."""
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            return sorted(json.loads(index.read_text())["weight_map"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{index} is damaged (no 'weight_map'); re-download the checkpoint.") from None
    files = sorted(folder.glob("*.safetensors"))
    return sorted(k for f in files for k in read_header(f)) if files else None


def _projections(experts: nn.Module) -> tuple[str, ...]:
    gated = getattr(experts, "has_gate", hasattr(experts, "gate_up_proj"))
    return ("gate_proj", "up_proj", "down_proj") if gated else ("up_proj", "down_proj")


def _model_names(model: nn.Module, block: MoEBlock, names: dict[int, str], out: dict[Expert, ExpertModules]) -> None:
    if block.layout == "modulelist":
        for e in range(block.num_experts):
            down = block.expert_down(e)
            for sub in block.experts[e].modules():  # type: ignore[index]
                if isinstance(sub, nn.Linear):
                    out[(block.layer, e)].add(names[id(sub)], sub is down)
    else:  # fused: the names llm-compressor gives the experts it linearizes
        prefix = names[id(block.experts)]
        for e in range(block.num_experts):
            for proj in _projections(block.experts):
                out[(block.layer, e)].add(f"{prefix}.{e}.{proj}", proj == "down_proj")
    if block.shared is not None:
        for sub in block.shared.modules():
            if isinstance(sub, nn.Linear):
                out[(block.layer, "shared")].add(names[id(sub)], sub is block.shared_down)


class _Owner(NamedTuple):
    prefix: str  # parameters under it belong to this expert module
    layer: int
    expert: int | str | None  # None: fused in the model, the expert index comes from the key
    down: str  # parameters under it are the down projection


def _owners(model_map: ModelMap, names: dict[int, str]) -> list[_Owner]:
    owners = []
    for b in model_map.moe:
        if b.layout == "modulelist":
            owners += [_Owner(names[id(b.experts[e])] + ".", b.layer, e, names[id(b.expert_down(e))] + ".")  # type: ignore[index]
                       for e in range(b.num_experts)]  # fmt: skip
        else:
            prefix = names[id(b.experts)] + "."
            owners.append(_Owner(prefix, b.layer, None, prefix + "down_proj"))
        if b.shared is not None:
            owners.append(_Owner(names[id(b.shared)] + ".", b.layer, "shared", names[id(b.shared_down)] + "."))
    return owners


def _checkpoint_names(model: nn.Module, model_map: ModelMap, names: dict[int, str], keys: list[str],
                      out: dict[Expert, ExpertModules]) -> None:  # fmt: skip
    """Add each checkpoint module (a key without its last component) to the expert it loads into."""
    rules = copy.deepcopy(get_model_conversion_mapping(model))  # renaming rules keep state
    renamings = [r for r in rules if isinstance(r, WeightRenaming)]
    converters = [r for r in rules if isinstance(r, WeightConverter)]
    model_keys = model.state_dict()
    owners = _owners(model_map, names)
    # One lookup per module: quantized formats add `weight_scale_inv`, `weight_packed`, ... beside it.
    for module in sorted({k.rpartition(".")[0] for k in keys if "." in k}):
        target, pattern = rename_source_key(f"{module}.weight", renamings, converters, model.base_model_prefix,
                                            model_keys)  # fmt: skip
        owner = next((o for o in owners if target.startswith(o.prefix)), None)
        if owner is None:
            continue
        expert = owner.expert
        if expert is None:  # fused in the model: per-expert on disk only when the rule has a '*'
            star = star_regex(pattern).search(f"{module}.weight") if pattern and "*" in pattern else None
            if star is None:
                continue
            expert = int(star.group(1))
        out[(owner.layer, expert)].add(module, target.startswith(owner.down))


def expert_modules(model: nn.Module, model_map: ModelMap, keys: list[str] | None) -> dict[Expert, ExpertModules]:
    """{(layer, expert | 'shared'): names} for every expert of the model, in both namings.

    >>> expert_modules(skeleton, map_model(skeleton), checkpoint_keys(folder))[(1, 3)].down
    ['model.layers.1.mlp.experts.3.down_proj', 'model.layers.1.block_sparse_moe.experts.3.w2']  # Mixtral
    """
    names = {id(m): n for n, m in model.named_modules()}
    out: dict[Expert, ExpertModules] = {}
    for b in model_map.moe:
        out |= {(b.layer, e): ExpertModules() for e in range(b.num_experts)}
        if b.shared is not None:
            out[(b.layer, "shared")] = ExpertModules()
        _model_names(model, b, names, out)
    if keys:
        _checkpoint_names(model, model_map, names, keys, out)
    return out
