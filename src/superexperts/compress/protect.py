"""`protect`: the Super Experts as a keep-in-high-precision list for quantization tools (issue 11).

Formats (pure functions of the protected entries; names from `protect_names`):
    llm-compressor  a recipe YAML; the modules go under the QuantizationModifier's `ignore:`
                    (exact names; compressed-tensors compares a plain entry with ==, `re:` with re.match)
    autoround       {"layer_config": {name: {"bits": 16}}} for AutoRound(layer_config=...)
    gptqmodel       {"dynamic": {"-:<regex>": {}}} for QuantizeConfig(dynamic=...); GPTQModel skips a
                    module when re.match(regex, name): each regex is the escaped name + '$'
    json            the canonical list, with the reason for every entry and the run's metadata

`atom_entries` (`protect --for json --atoms`): only each SE's super atoms, as (module, channels) for tools
that can keep single channels: atom k is input column k of the down projection and output row k
of the gate and up projections.

`whole_layer`: every routed expert of each SE layer, because vLLM (compressed-tensors MoE) picks
one quantization scheme per fused MoE layer, from expert 0: a single expert kept in high
precision is only servable with its whole MoE layer unquantized.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from ..runs.errors import UserError, did_you_mean
from ..runs.runfolder import to_jsonable

if TYPE_CHECKING:  # types only: `protect --help` reads FORMATS without loading torch
    from ..models.experts import Expert
    from .names import ExpertModules

FORMAT = "superexperts.compress.protect/1"
FORMATS = ("llm-compressor", "autoround", "gptqmodel", "json")
WHOLE_LAYER_WHY = ("vLLM (compressed-tensors MoE) picks one quantization scheme per fused MoE layer, from "
                   "expert 0: an expert kept in high precision is servable only with its whole MoE layer unquantized")
NAMING = ("each module appears in the model's naming (fused experts linearized as <experts>.<E>.<proj>, as "
          "llm-compressor does) and, where it differs, the checkpoint's own weight names (e.g. Mixtral "
          "block_sparse_moe.experts.E.w2); a name a model does not have matches nothing")  # fmt: skip


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise UserError(f"--for {name!r} is unknown. {did_you_mean(name, list(FORMATS))}"
                        f"Available: {', '.join(FORMATS)}.")  # fmt: skip
    return name


def _order(expert: Expert) -> tuple:
    layer, e = expert
    return (layer, isinstance(e, str), e if isinstance(e, int) else 0)


def protected_entries(super_experts: list[Expert], names: dict[Expert, ExpertModules], *,
                      whole_layer: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """[{"layer", "expert", "reason", "modules"}]: each SE's down projection, and with `whole_layer`
    every projection of every routed expert in the SEs' layers (a shared SE stays its own entry:
    shared experts are plain layers outside the fused MoE kernel)."""
    entries = [{"layer": layer, "expert": e, "reason": "super expert", "modules": list(names[(layer, e)].down)}
               for layer, e in sorted(super_experts, key=_order)]  # fmt: skip
    if whole_layer:
        ses = set(super_experts)
        for layer in sorted({layer for layer, _ in super_experts}):
            routed = sorted(e for (lyr, e) in names if lyr == layer and isinstance(e, int))
            for e in routed:
                reason = "super expert" if (layer, e) in ses else "same fused MoE layer as a super expert"
                entry = {"layer": layer, "expert": e, "reason": reason, "modules": list(names[(layer, e)].linears)}
                entries = [x for x in entries if (x["layer"], x["expert"]) != (layer, e)] + [entry]
        entries.sort(key=lambda x: _order((x["layer"], x["expert"])))
    missing = [f"{x['layer']}:{x['expert']}" for x in entries if not x["modules"]]
    if missing:
        raise UserError(f"no module name found for expert {missing[0]}; this model layout is not supported by protect.")
    return entries


def atom_entries(super_atoms: dict[Expert, list[tuple[int, float]]], names: dict[Expert, ExpertModules]
                 ) -> list[dict[str, Any]]:  # fmt: skip
    """[{"layer", "expert", "reason", "atoms", "modules", "channels"}] per SE with super atoms:
    `channels` lists {"module", "columns"} (down projection inputs) and {"module", "rows"} (gate and
    up projection outputs), in both namings."""
    entries = []
    for (layer, e), atoms in sorted(super_atoms.items(), key=lambda kv: _order(kv[0])):
        ks = sorted(k for k, _ in atoms)
        modules = names[(layer, e)]
        if not modules.down:
            raise UserError(f"no module name found for expert {layer}:{e}; this model layout is not supported by protect.")
        channels = [{"module": m, "columns": ks} for m in modules.down]
        channels += [{"module": m, "rows": ks} for m in modules.linears if m not in modules.down]
        entries.append({"layer": layer, "expert": e, "reason": "super atoms",
                        "atoms": [{"atom": k, "share": share} for k, share in atoms],
                        "modules": list(modules.linears), "channels": channels})  # fmt: skip
    return entries


def module_list(entries: list[dict[str, Any]]) -> list[str]:
    """Every protected module name once, in entry order."""
    seen: dict[str, None] = {}
    for entry in entries:
        seen |= dict.fromkeys(entry["modules"])
    return list(seen)


def canonical(entries: list[dict[str, Any]], *, whole_layer: bool, meta: dict[str, Any]) -> dict[str, Any]:
    atoms = any("channels" in x for x in entries)
    doc = {"format": FORMAT, "granularity": "atom" if atoms else "layer" if whole_layer else "expert"}
    if whole_layer:
        doc["why"] = WHOLE_LAYER_WHY
    return doc | {"naming": NAMING, "modules": module_list(entries), "entries": entries, "meta": meta}


def llm_compressor_recipe(entries: list[dict[str, Any]], *, whole_layer: bool, meta: dict[str, Any]) -> str:
    """A QuantizationModifier recipe; comments carry the provenance (llm-compressor reads every key)."""
    import yaml

    recipe = {"quant_stage": {"quant_modifiers": {"QuantizationModifier": {
        "targets": ["Linear"], "scheme": "W4A16", "ignore": ["lm_head", *module_list(entries)]}}}}  # fmt: skip
    ses = ", ".join(f"{x['layer']}:{x['expert']}" for x in entries if x["reason"] == "super expert")
    header = [
        f"superexperts protect: Super Experts {ses} of {meta.get('model', '?')} stay unquantized",
        f"run {meta.get('run', '?')}; superexperts {meta.get('tool_version', '?')}; {len(module_list(entries))} modules",
        "ignore: exact module names, in the model's naming and the checkpoint's where it differs",
        "edit scheme/targets as needed; MoE recipes usually also ignore the routers, e.g. 're:.*mlp.gate$'",
    ]  # fmt: skip
    if whole_layer:
        header.append(f"whole layers: {WHOLE_LAYER_WHY}")
    comments = "".join(f"# {line}\n" for line in header)
    return comments + yaml.safe_dump(recipe, sort_keys=False, default_flow_style=False, width=1000)


def gptqmodel_regex(name: str) -> str:
    """GPTQModel `dynamic` key that skips exactly `name` (its matcher: re.match on the module name)."""
    return f"-:{re.escape(name)}$"


def render(fmt: str, entries: list[dict[str, Any]], *, whole_layer: bool, meta: dict[str, Any]) -> str:
    """The text `protect` prints or writes."""
    check_format(fmt)
    if fmt == "llm-compressor":
        return llm_compressor_recipe(entries, whole_layer=whole_layer, meta=meta)
    names = module_list(entries)
    extra = {"why": WHOLE_LAYER_WHY} if whole_layer else {}
    if fmt == "autoround":
        doc = {"layer_config": {n: {"bits": 16} for n in names}, **extra,
               "usage": "AutoRound(model, tokenizer, layer_config=json.load(open(FILE))['layer_config'], ...)"}
    elif fmt == "gptqmodel":
        doc = {"dynamic": {gptqmodel_regex(n): {} for n in names}, **extra,
               "usage": "QuantizeConfig(bits=4, group_size=128, dynamic=json.load(open(FILE))['dynamic'])"}
    else:
        doc = canonical(entries, whole_layer=whole_layer, meta=meta)
    if fmt != "json":
        doc |= {"naming": NAMING, "meta": meta}
    return json.dumps(to_jsonable(doc), indent=2) + "\n"
