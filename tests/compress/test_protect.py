"""protect: every format selects exactly the SE modules, under the tools' own matching rules.

Two module universes per family: the model linearized the way llm-compressor does it (fused
experts -> ModuleList of per-expert gate/up/down Linears) and the checkpoint's own module names
(its weight keys without the suffix). llm-compressor's ignore list is matched with
compressed-tensors' own matcher; GPTQModel's `-:` keys with its documented rule (re.match);
AutoRound's keys are exact layer names.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from compressed_tensors.utils.match import match_name, match_named_modules
from torch import nn

import families
import legacy
from superexperts.compress.names import checkpoint_keys, expert_modules
from superexperts.compress.protect import render
from superexperts.models.adapters import map_model
from superexperts.models.checkpoints.skeleton import build_skeleton

# family -> (SEs, model-naming down template, checkpoint-naming down template or None: fused on disk,
#            shared down name template or None)
CASES = {
    "qwen3_moe": ([(1, 3), (2, 6)], "model.layers.{L}.mlp.experts.{E}.down_proj",
                  "model.layers.{L}.mlp.experts.{E}.down_proj", None),
    "qwen2_moe": ([(1, 3), (2, 6), (2, "shared")], "model.layers.{L}.mlp.experts.{E}.down_proj",
                  "model.layers.{L}.mlp.experts.{E}.down_proj", "model.layers.{L}.mlp.shared_expert.down_proj"),
    "olmoe": ([(0, 7), (3, 1)], "model.layers.{L}.mlp.experts.{E}.down_proj",
              "model.layers.{L}.mlp.experts.{E}.down_proj", None),
    "mixtral": ([(1, 3), (1, 5)], "model.layers.{L}.mlp.experts.{E}.down_proj",
                "model.layers.{L}.block_sparse_moe.experts.{E}.w2", None),
    "deepseek_v3": ([(1, 2), (2, "shared")], "model.layers.{L}.mlp.experts.{E}.down_proj",
                    "model.layers.{L}.mlp.experts.{E}.down_proj", "model.layers.{L}.mlp.shared_experts.down_proj"),
    "deepseek_v2": ([(2, 4)], "model.layers.{L}.mlp.experts.{E}.down_proj",
                    "model.layers.{L}.mlp.experts.{E}.down_proj", None),
    "glm4_moe": ([(3, 0), (1, "shared")], "model.layers.{L}.mlp.experts.{E}.down_proj",
                 "model.layers.{L}.mlp.experts.{E}.down_proj", "model.layers.{L}.mlp.shared_experts.down_proj"),
    "gpt_oss": ([(0, 4), (3, 6)], "model.layers.{L}.mlp.experts.{E}.down_proj", None, None),
    "llama4": ([(1, 2), (1, "shared")], "model.layers.{L}.feed_forward.experts.{E}.down_proj", None,
               "model.layers.{L}.feed_forward.shared_expert.down_proj"),
}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cache = {}

    def get(family):
        if family not in cache:
            model = families.build(family)
            folder = tmp_path_factory.mktemp(family) / "ckpt"
            model.save_pretrained(folder)  # the hub per-expert layout
            cache[family] = (model, folder)
        return cache[family]

    return get


def expected(family: str, ses, naming: str) -> set[str]:
    _, model_t, ckpt_t, shared_t = CASES[family]
    template = model_t if naming == "model" else ckpt_t
    out = set()
    for layer, e in ses:
        if e == "shared":
            out.add(shared_t.format(L=layer))
        elif template is not None:
            out.add(template.format(L=layer, E=e))
    return out


class _Expert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(1, 1), nn.Linear(1, 1), nn.Linear(1, 1)


def linearized(model: nn.Module) -> nn.Module:
    """What llm-compressor calibrates: each fused experts module replaced by per-expert Linears."""
    names = {id(m): n for n, m in model.named_modules()}
    for b in map_model(model).moe:
        if b.layout != "modulelist":
            model.set_submodule(names[id(b.experts)], nn.ModuleList(_Expert() for _ in range(b.num_experts)))
    return model


def universes(family: str, model: nn.Module, folder) -> dict[str, list[str]]:
    keys = checkpoint_keys(folder)
    return {"model": [n for n, m in linearized(model).named_modules() if isinstance(m, nn.Linear)],
            "checkpoint": sorted({k.rpartition(".")[0] for k in keys if k.endswith(".weight")})}  # fmt: skip


def outputs(family: str, folder, ses, whole_layer=False):
    skeleton, _ = build_skeleton(folder, None)
    mm = map_model(skeleton)
    from superexperts.compress.protect import protected_entries

    entries = protected_entries(ses, expert_modules(skeleton, mm, checkpoint_keys(folder)), whole_layer=whole_layer)
    return {fmt: render(fmt, entries, whole_layer=whole_layer, meta={"tool": "test"})
            for fmt in ("llm-compressor", "autoround", "gptqmodel", "json")}  # fmt: skip


def gptqmodel_skips(dynamic: dict, name: str) -> bool:
    """GPTQModel `dynamic_get`: a `-:` key whose regex re.match-es the module name skips it."""
    return any(k.startswith("-:") and re.match(k.removeprefix("-:"), name) for k in dynamic)


@pytest.mark.parametrize("family", sorted(CASES))
def test_every_format_selects_exactly_the_super_expert_modules(family, checkpoint):
    ses = CASES[family][0]
    _, folder = checkpoint(family)
    texts = outputs(family, folder, ses)
    recipe = yaml.safe_load(texts["llm-compressor"])["quant_stage"]["quant_modifiers"]["QuantizationModifier"]
    layer_config = json.loads(texts["autoround"])["layer_config"]
    dynamic = json.loads(texts["gptqmodel"])["dynamic"]
    canonical = json.loads(texts["json"])
    assert canonical["meta"] == {"tool": "test"} and canonical["granularity"] == "expert"

    model = families.build(family)
    for naming, universe in universes(family, model, folder).items():
        want = expected(family, ses, naming)
        if naming == "model":  # compressed-tensors' own matcher over the linearized model
            quantized = {n for n, _ in match_named_modules(model, ["Linear"], recipe["ignore"])}
            assert set(universe) - quantized == want | {"lm_head"}, (family, naming)
        ignored = {n for n in universe if any(match_name(n, t) for t in recipe["ignore"])} - {"lm_head"}
        assert ignored == want, (family, naming)
        assert {n for n in universe if gptqmodel_skips(dynamic, n)} == want, (family, naming)
        assert set(layer_config) & set(universe) == want, (family, naming)
        # AutoRound reads a key that is no layer name as a regex: the other naming's names match nothing else
        for key in set(layer_config) - set(universe):
            assert {n for n in universe if re.search(key, n)} <= want, (family, key)
    all_names = expected(family, ses, "model") | expected(family, ses, "checkpoint")
    assert set(canonical["modules"]) == all_names


@pytest.mark.parametrize("family", ["qwen2_moe", "mixtral", "llama4"])
def test_whole_layer_keeps_every_routed_expert_of_the_se_layers(family, checkpoint):
    ses = CASES[family][0]
    _, folder = checkpoint(family)
    texts = outputs(family, folder, ses, whole_layer=True)
    fused = families.build(family)
    names = {id(m): n for n, m in fused.named_modules()}
    layers = {layer for layer, _ in ses}
    want = {f"{names[id(b.experts)]}.{e}.{p}" for b in map_model(fused).moe if b.layer in layers
            for e in range(b.num_experts) for p in ("gate_proj", "up_proj", "down_proj")}  # fmt: skip
    model = linearized(fused)
    want |= expected(family, [se for se in ses if se[1] == "shared"], "model")
    recipe = yaml.safe_load(texts["llm-compressor"])["quant_stage"]["quant_modifiers"]["QuantizationModifier"]
    quantized = {n for n, _ in match_named_modules(model, ["Linear"], recipe["ignore"])}
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert linears - quantized == want | {"lm_head"}
    canonical = json.loads(texts["json"])
    assert canonical["granularity"] == "layer" and "vLLM" in canonical["why"]
    assert "vLLM" in texts["llm-compressor"] and "vLLM" in json.loads(texts["gptqmodel"])["why"]
    reasons = {(x["layer"], x["expert"]): x["reason"] for x in canonical["entries"]}
    assert all(reasons[se] == "super expert" for se in ses)


def test_legacy_modulelist_names_are_the_modules_own():
    model = legacy.legacy_mixtral(families.build("mixtral"))
    names = expert_modules(model, map_model(model), None)
    assert names[(1, 3)].down == ["model.layers.1.mlp.experts.3.w2"]
    assert sorted(names[(1, 3)].linears) == [f"model.layers.1.mlp.experts.3.{w}" for w in ("w1", "w2", "w3")]


def test_quantized_checkpoint_keys_map_to_their_module(tmp_path, checkpoint):
    """FP8-style keys (weight + weight_scale_inv) name the same module once."""
    from safetensors.torch import save_file

    model, folder = checkpoint("qwen3_moe")
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    keys = ["model.layers.1.mlp.experts.3.down_proj.weight", "model.layers.1.mlp.experts.3.down_proj.weight_scale_inv"]
    save_file({k: torch.zeros(1) for k in keys} | {"model.embed_tokens.weight": state["model.embed_tokens.weight"]},
              tmp_path / "model.safetensors")  # fmt: skip
    skeleton, _ = build_skeleton(tmp_path, None, allow_quantized=True)
    assert expert_modules(skeleton, map_model(skeleton), checkpoint_keys(tmp_path))[(1, 3)].down == [
        "model.layers.1.mlp.experts.3.down_proj"]  # fmt: skip
