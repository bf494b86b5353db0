"""Every MoE family of the installed transformers, from its model registry, as a tiny random model.

`moe_families()` reads transformers' auto mappings (causal LM and image-text-to-text) and keeps the
configs with an expert count; `tiny_config(family)` shrinks the family's own default config
generically (sizes, layers, experts, heads, vocabulary, per-layer lists), sub-configs included.
No family is named here: a new release's families are picked up, and one whose tiny config cannot be
built is reported with the reason (`TinyConfigError`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from transformers.models.auto import configuration_auto, modeling_auto

import families
from superexperts.models.config_file import EXPERT_COUNT_KEYS, expert_count

EXPERT_KEYS = EXPERT_COUNT_KEYS
LAYERS = 4
EXPERTS = 8

# Sizes by attribute name. Names ending in a suffix below are shrunk to the suffix's size when larger.
EXACT = {
    "vocab_size": families.VOCAB, "hidden_size": 64, "d_model": 64, "num_attention_heads": 4,
    "num_key_value_heads": 4, "head_dim": 16, "num_experts_per_tok": 2, "moe_k": 2, "top_k": 2,
    "n_group": 1, "topk_group": 1, "kv_lora_rank": 16, "q_lora_rank": 24, "qk_rope_head_dim": 4,
    "qk_nope_head_dim": 4, "v_head_dim": 8, "qk_head_dim": 8, "first_k_dense_replace": 1,
    "sliding_window": 8, "decoder_sparse_step": 1, "moe_layer_freq": 1, "interleave_moe_layer_step": 1,
    "mamba_num_heads": 4, "mamba_head_dim": 8, "ssm_state_size": 8, "mamba_d_state": 8, "n_groups": 1,
    "mamba_n_groups": 1, "mamba_n_heads": 4, "mamba_d_head": 8, "chunk_size": 8, "mamba_chunk_size": 8,
    "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 8,
    "linear_value_head_dim": 8, "time_step_rank": 4, "mamba_dt_rank": 4, "n_shared_experts": 1,
    "num_shared_experts": 1, "moe_num_shared_experts": 1, "depth": 2, "num_heads": 4, "embed_dim": 64,
    "out_hidden_size": 64, "projection_dim": 64, "text_hidden_size": 64, "vision_hidden_size": 64,
    "patch_size": 2, "spatial_merge_size": 2, "temporal_patch_size": 2, "image_size": 8,
    "num_nextn_predict_layers": 0, "mtp_num_layers": 0, "index_n_heads": 2, "index_head_dim": 8,
    "index_topk": 4, "hc_mult": 2, "o_lora_rank": 8, "o_groups": 2, "max_image_size": 32, "max_img_size": 32,
}  # fmt: skip
SUFFIXES = {"intermediate_size": 16, "_hidden_size": 64, "_head_dim": 8, "_rank": 8, "num_layers": 2,
            "attention_heads": 4, "key_value_heads": 4, "vocab_size": families.VOCAB, "ffn_dim": 32, "position_embeddings": 1024,
            "_channels": 32}
NONE_SET = ("num_experts_per_tok", "n_group", "topk_group")  # None by default in some families
COUNT_NAMES = ("num_hidden_layers", "num_layers", "n_layers")


class TinyConfigError(Exception):
    """A family's tiny config could not be built; the message says why."""


@dataclass(frozen=True)
class Family:
    model_type: str
    class_name: str  # the auto mapping's model class (causal LM or image-text-to-text)
    mapping: str  # "causal_lm" | "image_text_to_text"

    @property
    def model_class(self):
        import transformers

        return getattr(transformers, self.class_name)


def moe_families() -> list[Family]:
    """(model_type, model class) of every family whose default config has more than one expert.
    A type in both mappings is tested once: as image-text-to-text when its config is composite (has a
    text_config; its causal-LM class takes the text config only), else as a causal LM."""
    found: dict[str, Family] = {}
    for mapping, names in (("causal_lm", modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
                           ("image_text_to_text", modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)):  # fmt: skip
        for model_type, class_name in names.items():
            if model_type not in configuration_auto.CONFIG_MAPPING_NAMES:
                continue
            try:
                config = _default_config(model_type)
            except TinyConfigError:
                continue
            composite = getattr(config, "text_config", None) is not None
            if expert_count(config) > 1 and (model_type not in found or composite):  # one expert: a dense MLP
                found[model_type] = Family(model_type, class_name, mapping)
    return sorted(found.values(), key=lambda f: f.model_type)


def _default_config(model_type: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return configuration_auto.CONFIG_MAPPING[model_type]()
    except Exception as e:  # noqa: BLE001 - any failure of a third-party config is a reason to report
        raise TinyConfigError(f"default config: {type(e).__name__}: {str(e).splitlines()[0][:120]}") from None


def _shrunk(name: str, value, layers_before: int | None):
    """The tiny value of one config attribute, or `value` unchanged."""
    if value is None and name in NONE_SET:
        return EXACT[name]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if name in EXACT:
            return EXACT[name]
        if name in EXPERT_KEYS:
            return EXPERTS
        if name in COUNT_NAMES:
            return LAYERS
        for suffix, size in SUFFIXES.items():
            if name.endswith(suffix) and value > size:
                return size
        return value
    if isinstance(value, (list, str)) and layers_before and len(value) == layers_before and len(value) > LAYERS:
        return value[:LAYERS]  # a per-layer list or pattern (layer_types, hybrid_override_pattern, ...)
    if isinstance(value, list) and name.endswith("layers") and all(isinstance(v, int) for v in value):
        return [v for v in value if v < LAYERS]  # layer indices (mlp_only_layers, ...)
    return value


def _overrides(config) -> dict:
    """{attribute: tiny value} for the attributes of `config` to change; sub-configs as nested dicts."""
    layers_before = next((getattr(config, n) for n in COUNT_NAMES if isinstance(getattr(config, n, None), int)), None)
    out: dict = {}
    for name, value in vars(config).items():
        if name.startswith("_"):
            continue
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):  # a sub-config (text, vision, audio)
            out[name] = value.to_dict() | _overrides(value)
            continue
        new = _shrunk(name, value, layers_before)
        if new is not value:
            out[name] = new
    _fix_dependents(config, out)
    return out


def _fix_dependents(config, out: dict) -> None:
    """Sizes defined through other sizes, after shrinking."""
    get = lambda name: out.get(name, getattr(config, name, None))
    if get("qk_rope_head_dim") is not None and "head_dim" in vars(config):
        out["head_dim"] = get("qk_rope_head_dim")  # MLA: rotary part of each head
    for token in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = get(token)
        if isinstance(value, int) and value >= families.VOCAB or isinstance(value, list) and any(
                v >= families.VOCAB for v in value):  # fmt: skip
            out[token] = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}[token]
    for heads, head_dim in (("mamba_num_heads", "mamba_head_dim"), ("mamba_n_heads", "mamba_d_head")):
        expand = get("mamba_expand") or get("expand")
        if get(heads) and isinstance(expand, (int, float)) and get("hidden_size"):
            out[head_dim] = int(expand * get("hidden_size")) // get(heads)  # Mamba2: heads x head dim = expand x hidden
    types = get("layer_types")
    if get("sliding_window") is None and isinstance(types, list) and any("sliding" in str(t) for t in types):
        out["sliding_window"] = EXACT["sliding_window"]
    rope = get("rope_parameters")
    # Multimodal rope sections must sum to half the rotary dimension; some families keep their default
    # sections in the modeling code (config says only that it may hold them), so they are always set.
    mrope = isinstance(rope, dict) and ("mrope_section" in rope or "mrope_section" in (get("ignore_keys_at_rope_validation") or ()))
    if mrope and get("hidden_size") and get("num_attention_heads"):
        head_dim = get("head_dim") or get("hidden_size") // get("num_attention_heads")
        rotary = int(head_dim * rope.get("partial_rotary_factor", get("partial_rotary_factor") or 1))
        out["rope_parameters"] = rope | {"mrope_section": _split(rope.get("mrope_section", [1, 1, 1]), rotary // 2)}


def _split(sections: list[int], total: int) -> list[int]:
    """`sections` rescaled to sum to `total` (largest remainders), e.g. multimodal rope sections."""
    scale = total / sum(sections)
    parts = [int(s * scale) for s in sections]
    order = sorted(range(len(sections)), key=lambda i: sections[i] * scale - parts[i], reverse=True)
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def tiny_config(family: Family):
    """The family's own config class, built with every size shrunk (its post-init derives the rest)."""
    default = _default_config(family.model_type)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = type(default)(**_overrides(default))
    except Exception as e:  # noqa: BLE001
        raise TinyConfigError(f"tiny config: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from None
    text = getattr(config, "text_config", None) or config
    if isinstance(getattr(text, "mlp_only_layers", None), list):
        text.mlp_only_layers = [LAYERS - 1]  # one dense layer beside the MoE ones, as Qwen3 uses
    if expert_count(config) != EXPERTS:
        raise TinyConfigError(f"expert count not shrinkable (still {expert_count(config)})")
    return config


def build(family: Family, seed: int = 0) -> torch.nn.Module:
    """A tiny random model of the family (TinyConfigError with the reason when it cannot be built)."""
    config = tiny_config(family)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return families.build_from(family.model_class, config, seed)
    except Exception as e:  # noqa: BLE001
        raise TinyConfigError(f"model: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from None


def family(model_type: str) -> Family:
    """The registry's entry for one model type."""
    return next(f for f in moe_families() if f.model_type == model_type)
