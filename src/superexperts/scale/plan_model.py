"""Where `superexperts plan` gets a model's sizes: its config alone, no weight is read.

MODEL is, in this order:
- a local checkpoint folder: its config.json; the safetensors headers, when the shards are there,
  give the exact bytes on disk (headers only);
- a model the paper studied (`known.lookup`): the config shipped in
  `resources/known_configs.json`, so the plan works offline;
- a hub id: config.json from the hub (and the safetensors index's total size when reachable).
The skeleton is built from the config on the meta device (accelerate's `init_empty_weights`) and
measured with `model_shape`.

    >>> pm = load_plan_model("Qwen/Qwen3-30B-A3B", device_kind="cuda")
    >>> pm.shape.total_params, pm.source
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..identify import known
from ..models.adapters import map_model
from ..models.config_file import EXPERT_COUNT_KEYS
from ..models.loading import (
    auto_model_class,
    is_vision_language,
    load_config,
    resolve_dtype,
)
from ..models.shape import ModelShape, model_shape
from ..runs.errors import UserError

CONFIGS_FILE = "known_configs.json"


@dataclass(frozen=True)
class PlanModel:
    shape: ModelShape
    disk_bytes: float  # the checkpoint on disk (exact from headers, the index, or estimated)
    disk_layer_bytes: dict[int, int] | None  # per decoder layer, when the shards' headers were read
    source: str  # where the config came from, and how disk_bytes was found
    support: str = ""  # "supported: ..." from the model's structure (unsupported models raise instead)


@lru_cache(maxsize=1)
def _shipped() -> dict[str, Any]:
    return json.loads(resources.files("superexperts").joinpath("resources", CONFIGS_FILE).read_text())["configs"]


def shipped_config(spec: str) -> tuple[dict[str, Any], str] | None:
    """(config fields, source URL) of a model the paper studied, or None."""
    entry = known.lookup(spec)
    shipped = _shipped().get(entry["name"]) if entry is not None else None
    return (dict(shipped["config"]), shipped["source"]) if shipped else None


def read_config(spec: str, *, trust_remote_code: bool = False):
    """(transformers config, where it came from, local folder or None)."""
    from transformers import AutoConfig

    folder = Path(spec).expanduser()
    if folder.exists():
        config = load_config(str(folder), trust_remote_code)
        check_size_fields(folder / "config.json", config)
        return config, f"{folder}/config.json", folder
    shipped = shipped_config(spec)
    if shipped is not None:
        fields, source = shipped
        return AutoConfig.for_model(**fields), f"config shipped with superexperts ({source})", None
    return load_config(spec, trust_remote_code), f"config.json of {spec} (hub)", None


# Sizes transformers would silently fill with its own defaults when config.json lacks them.
SIZE_FIELDS = ("num_hidden_layers", "hidden_size", "vocab_size")


def check_size_fields(path: Path, config) -> None:
    """config.json names the model's sizes (its own or in `text_config`) and an expert count: a plan
    of transformers' defaults would describe another model. A size the config class derives from
    other fields (Nemotron-H's layer count from `layers_block_type`) counts as given."""
    raw = json.loads(path.read_text())
    text = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else {}
    fields = raw | text
    missing = [k for k in SIZE_FIELDS if k not in fields and not _derived(config, k)]
    if missing:
        raise UserError(f"{path} does not give {', '.join(missing)}; plan needs the checkpoint's own config.json "
                        "with its sizes (transformers would fill in defaults of another model).")  # fmt: skip
    if not any(isinstance(fields.get(k), int) and fields[k] > 0 for k in EXPERT_COUNT_KEYS):
        raise UserError(f"{path} names no expert count ({', '.join(EXPERT_COUNT_KEYS)}): the model has no MoE "
                        "layers to plan; superexperts works on Mixture-of-Experts models.")  # fmt: skip


def _derived(config, key: str) -> bool:
    """`key` is computed by the (text) config class from other fields (a property), not read from the file."""
    text = getattr(config, "text_config", None) or config
    return isinstance(getattr(type(text), key, None), property)


def build_from_config(config, dtype: torch.dtype, *, trust_remote_code: bool = False) -> nn.Module:
    """The model on the meta device (no memory, no weights)."""
    from accelerate import init_empty_weights
    try:
        with init_empty_weights():
            model = auto_model_class(config).from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot build {getattr(config, 'model_type', '?')} from its config "
                        f"({str(e).splitlines()[0]}); is it a causal LM transformers knows?") from None  # fmt: skip
    return model.eval()


def support(model: nn.Module, config) -> str:
    """One line saying what superexperts works on in `model` (a meta skeleton is enough), e.g.
    "supported: qwen3_moe (Qwen3MoeForCausalLM): 48 MoE layers of 128 experts (fused)"; a UserError
    "not supported: ..." with the reason when it finds no routed experts it can measure."""
    name = f"{getattr(config, 'model_type', '?')} ({type(model).__name__})"
    try:
        mm = map_model(model)
    except UserError as e:
        raise UserError(f"not supported: {name}: {e}") from None
    counts = sorted({b.num_experts for b in mm.moe})
    parts = [f"{len(mm.moe)} MoE layers of {'/'.join(map(str, counts))} experts ({mm.moe[0].layout})"]
    parts += [f"{len(mm.dense)} dense MLP layers"] if mm.dense else []
    parts += [f"{len(mm.other)} layers without an MLP (Mamba/attention)"] if mm.other else []
    line = f"supported: {name}: {', '.join(parts)}"
    if is_vision_language(config):
        line += "; vision-language: its language model is profiled on text"
    return line


def _quant(config) -> dict[str, Any] | None:
    quant = getattr(config, "quantization_config", None)
    return quant if isinstance(quant, dict) or quant is None else quant.to_dict()


def _config_dtype(config) -> torch.dtype:
    saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    return getattr(torch, saved) if isinstance(saved, str) else saved


def estimated_disk_bytes(model: nn.Module, config) -> float:
    """Bytes of the checkpoint as published: parameters and persistent buffers at the config's dtype;
    with block-wise FP8 (DeepSeek-V3/R1, Qwen3-*-FP8) the linear and expert weights at 1 byte plus a
    float32 scale per block, the rest (embeddings, norms, router, lm_head) at the config's dtype."""
    item = torch.empty(0, dtype=_config_dtype(config)).element_size()
    params = dict(model.named_parameters())  # tied parameters once, as checkpoints store them
    names = set(dict(model.named_parameters(remove_duplicate=False)))
    tensors = list(params.items()) + [(k, t) for k, t in model.state_dict().items() if k not in names]
    quant = _quant(config)
    if not quant or quant.get("quant_method") != "fp8":
        return float(sum(t.numel() for _, t in tensors) * item)
    rows, cols = quant.get("weight_block_size") or (128, 128)
    mm = map_model(model)
    routers = {id(b.router) for b in mm.moe if b.router is not None}
    head = model.get_output_embeddings()
    quantized = {f"{n}.weight" for n, m in model.named_modules()
                 if isinstance(m, nn.Linear) and id(m) not in routers and m is not head}  # fmt: skip
    experts = {id(b.experts) for b in mm.moe}
    for n, m in model.named_modules():
        if id(m) in experts:
            quantized |= {f"{n}.{k}" for k, p in m.named_parameters() if p.dim() == 3}
    total = 0.0
    for name, t in tensors:
        if name in quantized:
            blocks = math.ceil(t.shape[-2] / rows) * math.ceil(t.shape[-1] / cols) * math.prod(t.shape[:-2])
            total += t.numel() + 4 * blocks
        else:
            total += t.numel() * item
    return total


def _headers(folder: Path, model: nn.Module, *, trust_remote_code: bool = False) -> tuple[float, dict[int, int]] | None:
    """(total bytes, bytes per decoder layer) from the shards' headers, when the shards are there.
    FP8/MXFP4 checkpoints are read against the skeleton `--stream` uses (with the dequantizing
    quantizer, which knows their scales and `_blocks`/`_scales` tensors)."""
    from ..models.checkpoints.formats import quant_method
    from ..models.checkpoints.reader import Checkpoint
    from ..models.checkpoints.skeleton import build_skeleton, layers_path

    if not any(folder.glob("*.safetensors")):
        return None
    if quant_method(model.config) is not None:
        model, _ = build_skeleton(folder, None, trust_remote_code=trust_remote_code, allow_quantized=True)
    ckpt = Checkpoint.open(folder, model, layers_prefix=layers_path(model))
    size = {k: t.end - t.start for k, t in ckpt.tensors.items()}
    per_layer = {i: sum(size[k] for k in keys) for i, keys in ckpt.layer_keys.items()}
    return float(sum(size.values())), per_layer


def _index_total(spec: str) -> float | None:
    """metadata.total_size of a hub checkpoint's safetensors index (one small download), or None."""
    try:
        from huggingface_hub import hf_hub_download

        index = json.loads(Path(hf_hub_download(spec, "model.safetensors.index.json")).read_text())
        return float(index["metadata"]["total_size"])
    except (ImportError, OSError, ValueError, KeyError, TypeError):  # offline, no index, private: estimate
        return None


def load_plan_model(spec: str, *, dtype: str = "auto", device_kind: str = "cpu",
                    trust_remote_code: bool = False) -> PlanModel:  # fmt: skip
    """Sizes of MODEL at the dtype a run on `device_kind` would compute with (`--dtype auto` as profile)."""
    config, source, folder = read_config(spec, trust_remote_code=trust_remote_code)
    compute = resolve_dtype(dtype, torch.device(device_kind), config)
    model = build_from_config(config, compute, trust_remote_code=trust_remote_code)
    supported = support(model, config)
    shape = model_shape(model)
    found = _headers(folder, model, trust_remote_code=trust_remote_code) if folder is not None else None
    if found is not None:
        return PlanModel(shape, found[0], found[1], f"{source}; on disk: safetensors headers", supported)
    total = _index_total(spec) if folder is None and "shipped" not in source else None
    if total is not None:
        return PlanModel(shape, total, None, f"{source}; on disk: the hub's safetensors index", supported)
    return PlanModel(shape, estimated_disk_bytes(model, config), None, f"{source}; on disk: estimated from the config",
                     supported)
