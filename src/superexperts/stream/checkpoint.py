"""A safetensors checkpoint folder, read lazily: headers once, one layer's tensors at a time.

Only the headers are read up front (they are validated against the file sizes, so missing,
truncated or damaged shards fail before any work starts). Tensors are read on demand through
safetensors' `safe_open` and loaded into a meta skeleton with transformers' own loader
(`convert_and_load_state_dict_in_model`) and key/layout rules (`get_model_conversion_mapping`),
so hub per-expert keys (`mlp.experts.7.down_proj.weight`, Mixtral's `block_sparse_moe.experts.7.w2`)
become the fused parameters exactly as `from_pretrained` would make them.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import json
import math
import os
import re
import struct
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
from transformers.modeling_utils import LoadStateDictConfig
from transformers.utils import logging as hf_logging

from ..errors import UserError
from ..quantized import FP8_HEADER_DTYPES, check_scales, conversion_mapping, is_packed, is_scale

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
# Bytes per element of every dtype the safetensors format defines.
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}  # fmt: skip
SYNC_LOAD_ENV = "HF_DEACTIVATE_ASYNC_LOAD"  # read by transformers on every load call
FLOAT_DTYPES = {"F8_E4M3", "F8_E5M2", "F16", "BF16", "F32", "F64"}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, dtype, shape and absolute byte range in the file."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute offset of the first byte
    end: int


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and check a safetensors header: every tensor's bytes lie inside the file.

    >>> read_header(Path("ckpt/model.safetensors"))["model.embed_tokens.weight"].shape
    (128, 32)
    """
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(n))
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a valid safetensors file ({e}); re-download or re-save it.") from None
    header.pop("__metadata__", None)
    infos, data_end = {}, 0
    for name, h in header.items():
        try:
            begin, end = (int(x) for x in h["data_offsets"])
            shape, dtype = tuple(int(d) for d in h["shape"]), str(h["dtype"])
            expected = math.prod(shape) * DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path}: damaged header entry for {name!r}; re-download or re-save the checkpoint.")
        if end - begin != expected or begin < 0:
            raise UserError(f"{path}: tensor {name!r} has {end - begin} bytes for shape {shape} {dtype}; file is damaged.")
        infos[name] = TensorInfo(path, dtype, shape, 8 + n + begin, 8 + n + end)
        data_end = max(data_end, end)
    if 8 + n + data_end != size:
        what = "truncated" if 8 + n + data_end > size else "longer than its header says"
        raise UserError(f"{path} is {what} ({size} bytes, header needs {8 + n + data_end}); re-download or re-save it.")
    return infos


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (through its index when there is one)."""
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{index} is damaged (no 'weight_map'); re-download the checkpoint.")
        files = sorted({folder / name for name in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise UserError(f"{index} lists {len(missing)} missing shard(s), e.g. {missing[0]}; download all shards.")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(f"no safetensors weights in {folder} (expected {SINGLE_NAME} or {INDEX_NAME}); "
                        "save the model with `save_pretrained` (safe_serialization is the default).")  # fmt: skip
    return files


def read_tensor_index(folder: Path) -> dict[str, TensorInfo]:
    """Every tensor of the checkpoint -> where it is; checks the index agrees with the shards."""
    tensors: dict[str, TensorInfo] = {}
    for path in weight_files(folder):
        tensors.update(read_header(path))
    index = folder / INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        for name, file in weight_map.items():
            if name not in tensors or tensors[name].file.name != file:
                raise UserError(f"{index} says {name!r} is in {file}, but it is not there; the checkpoint is inconsistent.")
    return tensors


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """While a layer loads: no per-call 'Loading weights' bar, and transformers' synchronous
    loading (its documented switch HF_DEACTIVATE_ASYNC_LOAD, which it uses itself under memory
    constraints). Its 4 reader threads otherwise fragment the heap: measured peak 1.95x the layer
    instead of 1.3x. Both are restored on exit."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    saved = os.environ.get(SYNC_LOAD_ENV)
    hf_logging.disable_progress_bar()
    os.environ[SYNC_LOAD_ENV] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(SYNC_LOAD_ENV, None)
        else:
            os.environ[SYNC_LOAD_ENV] = saved
        if was_enabled:
            hf_logging.enable_progress_bar()


@dataclass
class Checkpoint:
    """A checkpoint folder's tensors, grouped by the decoder layer they load into.

    >>> ckpt = Checkpoint.open("ckpt/", skeleton, layers_prefix="model.layers")
    >>> ckpt.load(skeleton, ckpt.layer_keys[1], device="cpu", dtype=torch.bfloat16)
    """

    folder: Path
    tensors: dict[str, TensorInfo]
    mapping: list  # transformers WeightRenaming/WeightConverter rules of this model family
    layer_keys: dict[int, list[str]] = field(default_factory=dict)  # checkpoint keys per layer
    outer_keys: list[str] = field(default_factory=list)  # embeddings, final norm (not lm_head)
    target_of: dict[str, str] = field(default_factory=dict)  # checkpoint key -> model parameter
    head_keys: list[str] = field(default_factory=list)  # lm_head (absent when tied to the embeddings)
    hf_quantizer: Any = None  # FP8/MXFP4: transformers' quantizer whose ops dequantize while loading

    @classmethod
    def open(cls, folder: str | os.PathLike, skeleton: nn.Module, *, layers_prefix: str) -> Checkpoint:
        folder = Path(folder)
        tensors = read_tensor_index(folder)
        quantizer = getattr(skeleton, "hf_quantizer", None)
        ckpt = cls(folder, tensors, conversion_mapping(skeleton), hf_quantizer=quantizer)
        ckpt._group_keys(skeleton, layers_prefix)
        if quantizer is not None:
            check_scales(folder, tensors, ckpt.target_of)
        return ckpt

    def _group_keys(self, skeleton: nn.Module, layers_prefix: str) -> None:
        """Assign each checkpoint key to the layer its converted (model) name falls in."""
        rules = copy.deepcopy(self.mapping)  # renaming rules keep state; use a private copy
        renamings = [r for r in rules if isinstance(r, WeightRenaming)]
        converters = [r for r in rules if isinstance(r, WeightConverter)]
        model_keys = skeleton.state_dict()
        head = skeleton.get_output_embeddings()
        head_names = {f"{n}." for n, m in skeleton.named_modules() if head is not None and m is head}
        layer_re = re.compile(rf"^{re.escape(layers_prefix)}\.(\d+)\.")
        grouped: dict[int, list[str]] = defaultdict(list)
        for key in sorted(self.tensors):
            target, _ = rename_source_key(key, renamings, converters, skeleton.base_model_prefix, model_keys)
            if target not in model_keys:
                continue  # e.g. DeepSeek-V3's multi-token-prediction layer, not part of the model
            self.target_of[key] = target
            match = layer_re.match(target)
            if match:
                grouped[int(match.group(1))].append(key)
            elif any(target.startswith(h) for h in head_names):
                self.head_keys.append(key)
            else:
                self.outer_keys.append(key)
        self.layer_keys = dict(grouped)

    def check_dtypes(self, keys: list[str]) -> None:
        if self.hf_quantizer is not None:  # quantized values and scales go through its dequantizing ops
            keys = [k for k in keys if not (is_packed(k, self.tensors[k].dtype) or is_scale(k))]
        bad = [k for k in keys if self.tensors[k].dtype not in FLOAT_DTYPES or self.tensors[k].dtype in FP8_HEADER_DTYPES]
        if bad:
            info = self.tensors[bad[0]]
            raise UserError(f"{info.file.name}: {bad[0]!r} is {info.dtype}, not a float type, and config.json names "
                            "no fp8/mxfp4 quantization_config that would dequantize it; the config does not match.")  # fmt: skip

    def load(self, model: nn.Module, keys: list[str], *, device: torch.device | str, dtype: torch.dtype) -> None:
        """Read `keys` from the shards and set them (converted) on `model`, on `device`.

        Large parameters one at a time, largest first: converting per-expert tensors to a fused
        one briefly holds both, so this bounds the peak at about 4/3 of the layer instead of 2x.
        Tensors are read with pread, not mmap, so file pages do not count as resident memory.
        """
        self.check_dtypes(keys)
        groups: dict[str, list[str]] = defaultdict(list)
        for k in keys:
            groups[self.target_of.get(k, k)].append(k)
        size = {t: sum(self.tensors[k].end - self.tensors[k].start for k in ks) for t, ks in groups.items()}
        total = sum(size.values())
        big = sorted((t for t in groups if size[t] >= total / 10), key=lambda t: -size[t])
        small = [k for t in groups if t not in big for k in groups[t]]  # norms, router, attention: one call
        mapping = copy.deepcopy(self.mapping)
        with contextlib.ExitStack() as files, quiet_loading():
            handles: dict[Path, Any] = {}
            for chunk in [groups[t] for t in big] + ([small] if small else []):
                state = {}
                for k in chunk:
                    path = self.tensors[k].file
                    if path not in handles:
                        handles[path] = files.enter_context(_open(path))
                    state[k] = handles[path].get_slice(k)
                self._convert(model, state, device, dtype, mapping)
                del state
                release_freed_memory()

    def _convert(self, model: nn.Module, state: dict, device: torch.device | str, dtype: torch.dtype,
                 mapping: list) -> None:  # fmt: skip
        # Imported here: transformers' loader lives in a large module we only need while loading.
        from transformers.core_model_loading import convert_and_load_state_dict_in_model

        config = LoadStateDictConfig(device_map={"": device}, dtype=dtype, weight_mapping=mapping,
                                     hf_quantizer=self.hf_quantizer)  # fmt: skip
        info, _ = convert_and_load_state_dict_in_model(model, state, config)
        if info.mismatched_keys:
            name, found, expected = min(info.mismatched_keys)
            raise UserError(f"{self.folder}: {name} has shape {tuple(found)} but config.json implies "
                            f"{tuple(expected)}; the weights do not match the config.")  # fmt: skip
        if info.conversion_errors:
            name, message = next(iter(info.conversion_errors.items()))
            raise UserError(f"{self.folder}: cannot convert {name}: {message.strip().splitlines()[-1]}")


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc): loading per-expert tensors fragments the
    heap, and without this the resident size creeps up layer after layer."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        pass


def _open(path: Path):
    try:
        return safe_open(path, framework="pt", device="cpu", backend="pread")
    except (SafetensorError, OSError) as e:
        raise UserError(f"cannot read {path} ({e}); re-download or re-save the checkpoint.") from None
