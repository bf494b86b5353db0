"""Checkpoints as published: block-wise FP8 and MXFP4, dequantized on load by transformers' own ops.

DeepSeek-V3/R1 and Qwen3-*-FP8 store linear weights as float8_e4m3fn with a float32
`weight_scale_inv` per 128x128 block; gpt-oss stores its experts as MXFP4 (`*_blocks` +
`*_scales`). transformers reads both with `FineGrainedFP8Config(dequantize=True)` /
`Mxfp4Config(dequantize=True)`: its quantizer adds conversion ops (`Fp8Dequantize`,
`Mxfp4Dequantize`) in front of the per-family key rules. The layer-streaming loader and `export`
build the same quantizer for the meta skeleton, so a streamed layer holds exactly the tensors
`from_pretrained` would give it.

One deviation, for weights whose size is not a multiple of the block (DeepSeek-V3/R1's
`kv_a_proj_with_mqa` [576, 7168] with scales [5, 56], in every layer): transformers 5.x derives the
block from the grid (576 // 5) and fails, or silently uses a wrong block when the grid happens to
divide (192 rows, 2 scale rows -> 96). `BlockFp8Dequantize` reads such edge blocks as DeepSeek
writes them (fixed 128x128 blocks, the last one partial) and defers to transformers otherwise.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import MergeModulelist
from transformers.integrations.finegrained_fp8 import Fp8Dequantize
from transformers.integrations.mxfp4 import Mxfp4Dequantize, convert_moe_packed_tensors
from transformers.quantizers.auto import (
    AUTO_QUANTIZER_MAPPING,
    AutoHfQuantizer,
    register_quantization_config,
    register_quantizer,
)
from transformers.quantizers.quantizer_finegrained_fp8 import FineGrainedFP8HfQuantizer
from transformers.quantizers.quantizer_mxfp4 import Mxfp4HfQuantizer
from transformers.quantizers.quantizers_utils import get_module_from_name
from transformers.utils.quantization_config import FineGrainedFP8Config, Mxfp4Config

from ...runs.errors import UserError
from .integrity import quiet_transformers

CONFIGS = {"fp8": FineGrainedFP8Config, "mxfp4": Mxfp4Config}  # quant_method -> dequantizing config class
# (QUANTIZERS, below: quant_method -> transformers' quantizer with our memory-lean variants of its ops)
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
FP8_HEADER_DTYPES = ("F8_E4M3", "F8_E5M2")


def quant_method(config) -> str | None:
    """The checkpoint's `quantization_config.quant_method` (None when it is not quantized)."""
    quant = getattr(config, "quantization_config", None)
    if quant is None:
        return None
    method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    return str(getattr(method, "value", method))


def dequantizing_config(config):
    """`FineGrainedFP8Config(dequantize=True)` / `Mxfp4Config(dequantize=True)` for a checkpoint in
    one of those formats, None otherwise (unquantized, or a method this module does not read).

    >>> AutoModelForCausalLM.from_pretrained(path, quantization_config=dequantizing_config(config))
    """
    method = quant_method(config)
    return CONFIGS[method](dequantize=True) if method in CONFIGS else None


def has_edge_blocks(shape: tuple[int, ...] | list[int], block: list[int] | None) -> bool:
    """A partial block where transformers misreads it: a dimension larger than one block and not a
    multiple of it (it derives the block as size // grid; right for whole blocks or a single one)."""
    return block is not None and len(shape) >= 2 and any(n % b and n > b for n, b in zip(shape[-2:], block))


class BlockFp8Dequantize(Fp8Dequantize):
    """transformers' `Fp8Dequantize`, with partial edge blocks of the configured block size, and
    per-expert lists dequantized straight into their stacked tensor when a `MergeModulelist(dim=0)`
    follows (`stack`; that op passes a stacked tensor through). transformers' list comprehension
    interleaves ~2 float32 temporaries per expert with the kept results and fragments the heap:
    peak RSS of streaming grew 2.7 MB per MB of decoder layer instead of bf16's 1.25."""

    stack = False

    def convert(self, input_dict: dict, full_layer_name: str | None = None, model: nn.Module | None = None,
                **kwargs) -> dict:  # fmt: skip
        if not self.stack or "weight" in input_dict:
            return super().convert(input_dict, full_layer_name=full_layer_name, model=model, **kwargs)
        from .files import release_freed_memory

        dtype = self._get_target_dtype(model, full_layer_name)
        result: dict[str, Any] = {}
        for key, weights in input_dict.items():
            scales = input_dict.get(f"{key}_scale_inv")
            if "activation_scale" in key or "weight_scale_inv" in key:
                continue  # consumed below
            if scales is None or not isinstance(weights, list) or len(weights) != len(scales):
                result[key] = weights if scales is None else super().convert(
                    {key: weights, f"{key}_scale_inv": scales}, full_layer_name=full_layer_name, model=model)[key]
                continue
            stacked = None
            for i in range(len(weights)):  # by index: zip/enumerate tuples would keep the last codes alive
                one = self._dequantize_one(weights[i], scales[i], output_dtype=dtype)
                if stacked is None:
                    stacked = one.new_empty((len(weights), *one.shape))
                stacked[i] = one
                weights[i] = None  # the FP8 codes of this expert are no longer needed
            result[key] = stacked
            release_freed_memory()  # the freed codes, before the next op allocates its output
        return result

    def _dequantize_one(self, quantized: torch.Tensor, scales: torch.Tensor,
                        output_dtype: torch.dtype | None = None) -> torch.Tensor:  # fmt: skip
        block = self.hf_quantizer.quantization_config.weight_block_size
        rows, cols = quantized.shape[-2:]
        edge = has_edge_blocks(quantized.shape, block)
        grid = (math.ceil(rows / block[0]), math.ceil(cols / block[1])) if edge else None
        if not edge or quantized.dtype not in FP8_DTYPES or not scales.dtype.is_floating_point \
                or tuple(scales.shape[-2:]) != grid:  # fmt: skip
            return super()._dequantize_one(quantized, scales, output_dtype=output_dtype)
        # The scales expanded to the weight's shape: a weight-sized float32 copy, only for these few tensors.
        s = scales.float().repeat_interleave(block[0], -2)[..., :rows, :].repeat_interleave(block[1], -1)[..., :cols]
        return (quantized.float() * s).to(output_dtype or torch.float32)  # same float32 product as transformers


class DequantizingFP8Quantizer(FineGrainedFP8HfQuantizer):
    """transformers' FP8 quantizer in dequantize mode, loading through `BlockFp8Dequantize`."""

    def get_load_operations(self) -> dict:
        return {"dequantize": BlockFp8Dequantize}

    def update_weight_conversions(self, weight_conversions: list, model: nn.Module) -> list:
        updated = super().update_weight_conversions(weight_conversions, model)
        for converter in updated:
            ops = getattr(converter, "operations", [])
            if len(ops) > 1 and isinstance(ops[0], BlockFp8Dequantize) and isinstance(ops[1], MergeModulelist) \
                    and ops[1].dim == 0:  # fmt: skip
                ops[0].stack = True
        return updated

    def __deepcopy__(self, memo: dict) -> DequantizingFP8Quantizer:
        # Read-only settings; transformers deep-copies a converter (and this) for every checkpoint tensor.
        return self


class ExpertwiseMxfp4Dequantize(Mxfp4Dequantize):
    """transformers' `Mxfp4Dequantize`, decoding one expert at a time (with its own
    `convert_moe_packed_tensors`) into the output. On the whole tensor it holds int32 code indices,
    a half-size lookup result and a transposed copy next to the output: streaming's peak RSS grew
    ~3.5 MB per MB of dequantized layer."""

    def convert(self, input_dict: dict, model: nn.Module | None = None, full_layer_name: str | None = None,
                **kwargs) -> dict:  # fmt: skip
        proj = "gate_up_proj" if "gate_up_proj" in full_layer_name else "down_proj"
        if f"{proj}_blocks" not in input_dict or f"{proj}_scales" not in input_dict:
            return super().convert(input_dict, model=model, full_layer_name=full_layer_name, **kwargs)
        blocks, scales = (input_dict[f"{proj}_{k}"] for k in ("blocks", "scales"))
        blocks, scales = (t[0] if isinstance(t, list) else t for t in (blocks, scales))
        module, name = get_module_from_name(model, full_layer_name)
        dtype = getattr(module, name).dtype
        out = None
        for e in range(blocks.shape[0]):  # [E, out, in/32, 16] -> [E, in, out], one expert at a time
            one = convert_moe_packed_tensors(blocks[e : e + 1], scales[e : e + 1], dtype=dtype)
            if out is None:
                out = one.new_empty((blocks.shape[0], *one.shape[1:]))
            out[e] = one[0]
        return {full_layer_name: nn.Parameter(out)}


class DequantizingMxfp4Quantizer(Mxfp4HfQuantizer):
    """transformers' MXFP4 quantizer in dequantize mode, loading through `ExpertwiseMxfp4Dequantize`."""

    def get_load_operations(self) -> dict:
        return super().get_load_operations() | {"dequantize": ExpertwiseMxfp4Dequantize}


QUANTIZERS = {"fp8": DequantizingFP8Quantizer, "mxfp4": DequantizingMxfp4Quantizer}


def prepare(model: nn.Module, dtype: torch.dtype):
    """Ready the meta skeleton of a quantized checkpoint for a dequantizing load, as `from_pretrained`
    does before it reads weights; returns the quantizer (None when the checkpoint is not quantized)."""
    wanted = dequantizing_config(model.config)
    if wanted is None:
        return None
    method = quant_method(model.config)
    merged = AutoHfQuantizer.merge_quantization_configs(model.config.quantization_config, wanted)
    quantizer = QUANTIZERS[method](merged, pre_quantized=True)
    with quiet_transformers():  # its "MXFP4 on CPU ... we will dequantize" notice: dequantizing is the point
        quantizer.validate_environment(device_map=None, weights_only=True)
        quantizer.preprocess_model(model=model, dtype=dtype, device_map=None, checkpoint_files=None, use_kernels=False)
    return quantizer


def conversion_mapping(model: nn.Module) -> list:
    """transformers' key/layout rules for `model`, with its quantizer's dequantizing ops if it has one."""
    return get_model_conversion_mapping(model, hf_quantizer=getattr(model, "hf_quantizer", None))


def is_scale(key: str) -> bool:
    """A per-block scale of a quantized weight (FP8 `weight_scale_inv`, MXFP4 `*_scales`)."""
    return key.endswith(("_scale_inv", "_scales", ".scale", "qscale_weight"))


def is_packed(key: str, dtype: str) -> bool:
    """Quantized values: FP8 bytes or MXFP4 `*_blocks` (two e2m1 codes per byte)."""
    return dtype in FP8_HEADER_DTYPES or key.endswith("_blocks")


def values_per_element(key: str) -> int:
    """Weight values stored per element of a checkpoint tensor (MXFP4 blocks pack two per byte)."""
    return 2 if key.endswith("_blocks") else 1


def dequantized_sizes(tensors: dict[str, Any], element_size: int) -> dict[str, int]:
    """Bytes of each checkpoint tensor once loaded in a dtype of `element_size` bytes (scales dropped)."""
    return {k: math.prod(info.shape) * values_per_element(k) * element_size
            for k, info in tensors.items() if not is_scale(k)}  # fmt: skip


def dequantized_bytes(path: str, dtype: torch.dtype) -> int | None:
    """Memory of a local quantized checkpoint loaded in `dtype` (None for a hub id: not checked)."""
    from .files import read_tensor_index

    if not Path(path, "config.json").is_file():
        return None
    return sum(dequantized_sizes(read_tensor_index(Path(path)), dtype.itemsize).values())


def _scale_name(key: str) -> str:
    return key.removesuffix("_blocks") + "_scales" if key.endswith("_blocks") else key + "_scale_inv"


def check_scales(folder: Path, tensors: dict[str, Any], target_of: dict[str, str]) -> None:
    """Every quantized tensor comes with its scales, loaded into the same parameter; else a one-line
    UserError before any weight is read (transformers would load the raw codes as numbers)."""
    values: dict[str, list[str]] = defaultdict(list)
    scales: dict[str, int] = defaultdict(int)
    for key, target in target_of.items():
        if is_packed(key, tensors[key].dtype):
            values[target].append(key)
        elif is_scale(key):
            scales[target] += 1
    for target, keys in values.items():
        if scales[target] < len(keys):
            key = next((k for k in keys if _scale_name(k) not in target_of), keys[0])
            raise UserError(f"{folder}: {key!r} is quantized but its scale {_scale_name(key)!r} is missing; "
                            "the checkpoint is incomplete or damaged, re-download it.")  # fmt: skip


def in_memory_quantization(config):
    """The `quantization_config` argument of an in-memory `from_pretrained` for `config`'s checkpoint.

    Block-wise FP8 loads through the streaming path's `DequantizingFP8Quantizer` (partial edge blocks
    read as DeepSeek writes them; transformers' own op misreads them, docs/upstream/
    transformers-fp8-edge-blocks.md): `config`'s quant_method is renamed to `IN_MEMORY_FP8`, under
    which that quantizer is registered, and None is returned (transformers takes the checkpoint's
    config). MXFP4 and unquantized checkpoints: `dequantizing_config` as before.
    """
    if quant_method(config) != "fp8":
        return dequantizing_config(config)
    quant = config.quantization_config
    quant = dict(quant) if isinstance(quant, dict) else quant.to_dict()
    config.quantization_config = quant | {"quant_method": IN_MEMORY_FP8, "dequantize": True}
    return None


# transformers' registries for custom quantization methods: the checkpoint's own FP8 config class, read
# by our quantizer. Registered once, as capture.experts_fn registers its experts implementation.
IN_MEMORY_FP8 = "superexperts_fp8"
if IN_MEMORY_FP8 not in AUTO_QUANTIZER_MAPPING:
    register_quantization_config(IN_MEMORY_FP8)(FineGrainedFP8Config)
    register_quantizer(IN_MEMORY_FP8)(DequantizingFP8Quantizer)
MXFP4_BYTES = 16  # bytes per MXFP4 block: 32 e2m1 codes, two per byte, one E8M0 scale per block


def _block_size(config) -> list[int] | None:
    quant = config.quantization_config
    return quant.get("weight_block_size") if isinstance(quant, dict) else getattr(quant, "weight_block_size", None)


def _tensor_problem(key: str, tensors: dict[str, Any], config) -> str | None:
    """What is wrong with quantized tensor `key` (dtype, shape, or its scales) for the config's
    format; None when it is right or not a quantized tensor."""
    info = tensors[key]
    if quant_method(config) == "mxfp4" and key.endswith("_blocks"):
        scales = tensors.get(_scale_name(key))
        if info.dtype != "U8" or len(info.shape) < 2 or info.shape[-1] != MXFP4_BYTES:
            return f"is {info.dtype} {list(info.shape)}; MXFP4 blocks are U8 [..., blocks, {MXFP4_BYTES}]"
        if scales is not None and (scales.dtype != "U8" or tuple(scales.shape) != tuple(info.shape[:-1])):
            return (f"has scales {_scale_name(key)!r} {scales.dtype} {list(scales.shape)}; MXFP4 needs U8 "
                    f"{list(info.shape[:-1])} (one exponent per block)")  # fmt: skip
    if quant_method(config) == "fp8" and key.endswith(".weight") and key + "_scale_inv" in tensors:
        scales, block = tensors[key + "_scale_inv"], _block_size(config)
        if info.dtype not in FP8_HEADER_DTYPES:
            return f"is {info.dtype} but has a weight_scale_inv; block-FP8 weights are {' or '.join(FP8_HEADER_DTYPES)}"
        if not scales.dtype.startswith(("F", "BF")) or scales.dtype in FP8_HEADER_DTYPES:
            return f"has scales {key}_scale_inv of dtype {scales.dtype}; FP8 scales are floats (F32)"
        if block and len(info.shape) >= 2:
            grid = [*info.shape[:-2], *(math.ceil(n / b) for n, b in zip(info.shape[-2:], block))]
            if list(scales.shape) != grid:
                return (f"{list(info.shape)} has scales {key}_scale_inv {list(scales.shape)}; blocks of "
                        f"{list(block)} need {grid}")  # fmt: skip
    return None


def check_quantized_tensors(folder: Path, tensors: dict[str, Any], config) -> None:
    """dtype and shape of every FP8/MXFP4 tensor and its scales against the quantization config,
    from the headers (no weight read): one line naming the first bad tensor. transformers would
    otherwise raise a long RuntimeError (in memory) or read wrong values as numbers (streaming)."""
    for key in sorted(tensors):
        problem = _tensor_problem(key, tensors, config)
        if problem is not None:
            raise UserError(f"{folder}: {key!r} {problem}; the checkpoint is damaged or not what its "
                            f"config.json says ({quant_method(config)}); re-download or re-save it.")  # fmt: skip


def check_in_memory(path: str, config) -> None:
    """Refuse, before loading, a quantized checkpoint whose tensors do not match its quantization
    config (transformers would raise a long RuntimeError or read wrong values). Partial FP8 edge
    blocks are fine: `in_memory_quantization` reads them as the streaming path does."""
    from .files import read_tensor_index

    if quant_method(config) not in QUANTIZERS or not Path(path, "config.json").is_file():
        return
    check_quantized_tensors(Path(path), read_tensor_index(Path(path)), config)
