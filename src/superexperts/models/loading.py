"""Load a model + tokenizer from a local folder, a hub id, or (no argument) the built-in demo.

Everything that can be checked from the config is checked before any weight is read.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..runs.errors import UserError, warn
from .checkpoints.integrity import (
    check_loading_info,
    check_weight_files,
    hub_kwargs,
    hub_unreachable,
    quiet_transformers,
)
from .config_sizes import EXPERT_COUNT_KEYS
from .device_map import resolve_device

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class Loaded:
    model: torch.nn.Module
    tokenizer: Any
    spec: str  # what the user passed ("" for the demo)
    path: str  # local folder or hub id actually read
    synthetic: bool  # the built-in demo
    device_map: str | None = None  # --device-map as given (None: the whole model on one device)
    offload: Any = None  # the TemporaryDirectory holding disk-offloaded weights (lives with the model)

    def describe(self) -> dict[str, Any]:
        config = self.model.config
        # absolute path or hub id + snapshot commit, and the fingerprint: a run read from another
        # working folder must find the same model, and other weights are told apart (issue 23)
        identity = _identity(self.path)
        described = {
            "model": self.spec or "builtin demo",
            "model_path": identity["model_path"],
            "revision": identity["revision"],
            "synthetic": self.synthetic,
            "fingerprint": identity["fingerprint"],
        }
        if is_vision_language(config):
            described["calibration_modality"] = "text only: the language model of a vision-language model"
        if self.device_map is not None:
            from .device_map import describe

            described["device_map"] = describe(self.device_map, self.model)
        return described


@functools.lru_cache(maxsize=8)
def _identity(path: str) -> dict[str, Any]:
    from .identity import model_identity

    return model_identity(path)


def check_dtype(dtype: str) -> None:
    if dtype != "auto" and dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r} unknown; use auto, {', '.join(DTYPES)}.")


def resolve_dtype(dtype: str, device: torch.device, config) -> torch.dtype:
    check_dtype(dtype)
    if dtype == "auto":
        if device.type == "cpu":
            return torch.float32  # bf16 matmuls are slow on most CPUs and change the numbers little
        saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        return saved if isinstance(saved, torch.dtype) else DTYPES.get(str(saved), torch.bfloat16)
    return DTYPES[dtype]


def expert_count(config) -> int:
    for cfg in (config, getattr(config, "text_config", None)):
        for key in EXPERT_COUNT_KEYS:
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
    return 0


def auto_model_class(config):
    """The transformers auto class that builds `config` whole: AutoModelForCausalLM for a language model,
    AutoModelForImageTextToText for a vision-language one (Qwen3-VL-MoE, GLM-4.5V, ERNIE-4.5-VL, Aria,
    ...), whose causal-LM class, when there is one, takes the text config only. Its language model is
    what superexperts profiles, on text (`is_vision_language`); module names stay the full model's.

    >>> auto_model_class(AutoConfig.from_pretrained("Qwen/Qwen3-VL-30B-A3B-Instruct")).__name__
    'AutoModelForImageTextToText'
    """
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    for auto in (AutoModelForCausalLM, AutoModelForImageTextToText):
        mapping = auto._model_mapping
        cls = mapping.get(type(config), None)
        if cls is not None and isinstance(config, cls.config_class):
            return auto
    return AutoModelForCausalLM  # remote code, or a type neither knows: from_pretrained says why


def is_vision_language(config) -> bool:
    """A model loaded through AutoModelForImageTextToText (calibrated on text only)."""
    from transformers import AutoModelForImageTextToText

    return auto_model_class(config) is AutoModelForImageTextToText


def load_config(path: str, trust_remote_code: bool):
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    local = Path(path)
    if local.exists() and not (local / "config.json").is_file():
        raise UserError(f"{path} is not a checkpoint folder (no config.json); pass a transformers model folder.")
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, **hub_kwargs(path))
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise UserError(f"{path} needs its own code; re-run with --trust-remote-code if you trust it.")
        raise UserError(f"{path}: {str(e).splitlines()[0]}")
    except (OSError, TypeError, KeyError, StrictDataclassError) as e:
        if local.exists():  # a damaged config.json (or a field of the wrong type), not a hub problem
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"cannot read {local / 'config.json'} ({why}); re-download or re-save the checkpoint.") from None
        if hub_unreachable():
            raise UserError(f"'{path}' is not a local folder nor in the local Hugging Face cache, and the hub is offline "
                            "(HF_HUB_OFFLINE or no network); pass a local checkpoint folder.") from None
        raise UserError(
            f"could not read a model config for '{path}' (not a local folder, and the hub is unreachable or the "
            "id is wrong); pass a local checkpoint folder."
        )


def config_layers(config) -> int | None:
    """The decoder layer count of a config (None: no config, or it does not say)."""
    text = getattr(config, "text_config", None) or config
    layers = getattr(text, "num_hidden_layers", None)
    return layers if isinstance(layers, int) else None


def _checkpoint_bytes(path: str) -> int:
    folder = Path(path)
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) if folder.is_dir() else 0


def check_fits(path: str, device: torch.device, need: int | None = None) -> None:
    """Refuse early when the weights (`need` bytes, default the files' size) cannot fit the device
    (the caller can stream instead)."""
    need = _checkpoint_bytes(path) if need is None else need
    if need == 0:
        return
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0] * torch.cuda.device_count()
    elif device.type == "cpu":
        import psutil

        free = psutil.virtual_memory().available
    else:
        return
    if need > free:
        raise UserError(
            f"the checkpoint needs {need / 2**30:.1f} GiB but {device} has {free / 2**30:.1f} GiB free; "
            "use --stream (layer by layer) or --device-map auto."
        )


def load_tokenizer(path: str, trust_remote_code: bool, vocab_rows: int):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **hub_kwargs(path))
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"no usable tokenizer in {path} ({type(e).__name__}); save the model's tokenizer there.")
    if len(tokenizer) < 2 or not tokenizer("The model").input_ids:
        raise UserError(f"the tokenizer in {path} is empty (missing tokenizer files?); save the model's tokenizer there.")
    if len(tokenizer) > vocab_rows:
        raise UserError(
            f"tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab_rows}: they do not match; "
            "use the tokenizer saved with this model."
        )
    return tokenizer


def load_model(
    spec: str | None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_missing_weights: bool = False,
    device_map: str | None = None,
) -> Loaded:
    """Load a transformers MoE causal LM and its tokenizer; `spec=None` is the built-in demo.

    A checkpoint with damaged files, or with weights missing, unexpected or of the wrong shape
    for the model, is refused (transformers would fill the gaps with random values);
    `allow_missing_weights` loads missing/unexpected ones anyway, with a warning.
    `device_map` (auto | balanced | balanced_low_0 | a JSON file, see device_map.py) spreads the
    model over devices and a disk offload folder instead of putting it all on `device`.

    >>> loaded = load_model("Qwen/Qwen3-30B-A3B", device="cuda", dtype="bfloat16")
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # ours is the only progress bar on the terminal
    check_dtype(dtype)
    from .device_map import check_device_args, main_device, read_device_map

    check_device_args(device, device_map)
    placement = read_device_map(device_map) if device_map is not None else None
    dev = resolve_device(device) if placement is None else main_device(placement)
    path = checkpoint_path(spec)
    config = load_config(path, trust_remote_code)
    synthetic = is_demo(config)
    if expert_count(config) == 0:
        raise UserError(
            f"{spec}: {config.model_type} is not a Mixture-of-Experts model (no expert count in its config); "
            "superexperts needs an MoE model such as Qwen3-MoE, DeepSeek-V2/V3, Mixtral, OLMoE or GPT-OSS."
        )
    torch_dtype = resolve_dtype(dtype, dev, config)
    from .checkpoints.formats import check_in_memory, dequantized_bytes, in_memory_quantization, quant_method

    # FP8/MXFP4 as published: dequantized on every device (GPU kernels would bypass the experts capture),
    # FP8 through the streaming path's quantizer (edge blocks)
    quantized = quant_method(config) is not None
    if quantized:
        check_in_memory(path, config)  # blocks and scales against the config, before transformers reads them
    quantization = in_memory_quantization(config)
    offload = None
    if placement is None:
        check_fits(path, dev, dequantized_bytes(path, torch_dtype) if quantized else None)
        placed: dict = {"device_map": {"": dev}}
    else:  # accelerate may put what does not fit on disk: in a folder of ours, removed with the model
        if isinstance(placement, dict):
            _check_map_against_config(placement, config, device_map, trust_remote_code)
        offload = tempfile.TemporaryDirectory(prefix="se-offload-")
        placed = {"device_map": placement, "offload_folder": offload.name}
    check_weight_files(Path(path))
    with quiet_transformers():
        model, info = auto_model_class(config).from_pretrained(
            path, config=config, dtype=torch_dtype, trust_remote_code=trust_remote_code, output_loading_info=True,
            ignore_mismatched_sizes=True, quantization_config=quantization, **placed, **hub_kwargs(path),
        )  # fmt: skip
    check_loading_info(info, spec or path, allow_missing=allow_missing_weights)
    model.eval()
    if is_vision_language(config):
        warn(f"{config.model_type} is a vision-language model: superexperts profiles its language model on text "
             "only (the vision tower is loaded, not run); module names are the full model's.")  # fmt: skip
    if placement is not None:
        from .device_map import mark_execution_devices

        mark_execution_devices(model)
    tokenizer = load_tokenizer(path, trust_remote_code, model.get_input_embeddings().weight.shape[0])
    return Loaded(model=model, tokenizer=tokenizer, spec=spec or "", path=path, synthetic=synthetic,
                  device_map=device_map, offload=offload)  # fmt: skip


def checkpoint_path(spec: str | None) -> str:
    """The local folder (or hub id) of MODEL; None or "demo" is the built-in demo's saved copy."""
    from .demo import DEMO_SPEC

    if spec is None or (spec == DEMO_SPEC and not os.path.exists(spec)):  # a folder named demo wins
        from .demo import demo_checkpoint

        return str(demo_checkpoint())
    return os.path.expanduser(spec)


def is_demo(config) -> bool:
    """The built-in demo or a copy of it (its config.json carries the marker): always labelled synthetic."""
    from .demo import DEMO_MARKER

    return getattr(config, DEMO_MARKER, False) is True


def _check_map_against_config(placement: dict, config, spec: str, trust_remote_code: bool) -> None:
    """A FILE map's module names against the model built on the meta device (no weights read)."""
    from accelerate import init_empty_weights

    from .device_map import check_covers

    with init_empty_weights(), quiet_transformers():
        skeleton = auto_model_class(config).from_config(config, trust_remote_code=trust_remote_code)
    check_covers(placement, skeleton, spec)


def warn_seq_len(config, seq_len: int) -> None:
    """Warn when --seq-len exceeds the positions the model was built for (results past it are not
    what the model computes in normal use, and some families extrapolate badly)."""
    text_config = getattr(config, "text_config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(text_config, "max_position_embeddings", None)
    if isinstance(limit, int) and seq_len > limit:
        warn(f"--seq-len {seq_len} exceeds the model's max_position_embeddings ({limit}); "
             f"positions past {limit} are outside what it was trained for. Use --seq-len {limit} or less.")
