"""A safetensors checkpoint folder, read lazily: headers once, one layer's tensors at a time.

Only the headers are read up front (they are validated against the file sizes, so missing,
truncated or damaged shards fail before any work starts). Tensors are read on demand (straight
from the byte ranges the headers give) and loaded into a meta skeleton with transformers' own loader
(`convert_and_load_state_dict_in_model`) and key/layout rules (`get_model_conversion_mapping`),
so hub per-expert keys (`mlp.experts.7.down_proj.weight`, Mixtral's `block_sparse_moe.experts.7.w2`)
become the fused parameters exactly as `from_pretrained` would make them.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
from transformers.modeling_utils import LoadStateDictConfig
from transformers.utils import logging as hf_logging

from ...runs.errors import UserError
from .files import TensorInfo, read_tensor_index, read_tensors, release_freed_memory
from .formats import (
    FP8_HEADER_DTYPES,
    check_quantized_tensors,
    check_scales,
    conversion_mapping,
    is_packed,
    is_scale,
)

SYNC_LOAD_ENV = "HF_DEACTIVATE_ASYNC_LOAD"  # read by transformers on every load call
FLOAT_DTYPES = {"F8_E4M3", "F8_E5M2", "F16", "BF16", "F32", "F64"}


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
    integer_targets: set[str] = field(default_factory=set)  # integer model tensors (DeepSeek-V4's hash routing table)

    @classmethod
    def open(cls, folder: str | os.PathLike, skeleton: nn.Module, *, layers_prefix: str) -> Checkpoint:
        folder = Path(folder)
        tensors = read_tensor_index(folder)
        quantizer = getattr(skeleton, "hf_quantizer", None)
        ckpt = cls(folder, tensors, conversion_mapping(skeleton), hf_quantizer=quantizer)
        unused = ckpt._group_keys(skeleton, layers_prefix)
        unexpected = sorted(_unexpected(skeleton, unused))
        raw = [k for k, t in tensors.items() if t.dtype in FP8_HEADER_DTYPES] if quantizer is None else []
        if raw:  # quantized codes with no config to dequantize them: say that, not "unexpected scales"
            info = tensors[raw[0]]
            raise UserError(f"{info.file.name}: {raw[0]!r} is {info.dtype}, not a float type, and config.json names "
                            "no fp8/mxfp4 quantization_config that would dequantize it; the config does not match.")  # fmt: skip
        if unexpected:  # in memory, transformers would drop them silently: a checkpoint of another model
            raise UserError(f"{folder}: {len(unexpected)} checkpoint tensor(s) the model has no place for "
                            f"({', '.join(unexpected[:2])}{', ...' if len(unexpected) > 2 else ''}); "
                            "the checkpoint does not match its config.json.")  # fmt: skip
        if quantizer is not None:
            check_scales(folder, tensors, ckpt.target_of)
            check_quantized_tensors(folder, tensors, skeleton.config)
        return ckpt

    def _group_keys(self, skeleton: nn.Module, layers_prefix: str) -> set[str]:
        """Assign each checkpoint key to the layer its converted (model) name falls in; returns the
        converted names that are not in the model."""
        rules = copy.deepcopy(self.mapping)  # renaming rules keep state; use a private copy
        renamings = [r for r in rules if isinstance(r, WeightRenaming)]
        converters = [r for r in rules if isinstance(r, WeightConverter)]
        model_keys = skeleton.state_dict()
        self.integer_targets = {k for k, t in model_keys.items() if not t.is_floating_point()}
        head = skeleton.get_output_embeddings()
        head_names = {f"{n}." for n, m in skeleton.named_modules() if head is not None and m is head}
        layer_re = re.compile(rf"^{re.escape(layers_prefix)}\.(\d+)\.")
        grouped: dict[int, list[str]] = defaultdict(list)
        unused: set[str] = set()
        for key in sorted(self.tensors):
            target, _ = rename_source_key(key, renamings, converters, skeleton.base_model_prefix, model_keys)
            if target not in model_keys and key in model_keys:  # a rule too broad for this key, as
                # transformers' loader decides too (DeepSeek-V4's `.norm.` -> `.kv_norm.` on the final norm)
                target, _ = rename_source_key(key, [], [], skeleton.base_model_prefix, model_keys)
            if target not in model_keys:
                unused.add(target)  # e.g. DeepSeek-V3's multi-token-prediction layer, not part of the model
                continue
            self.target_of[key] = target
            match = layer_re.match(target)
            if match:
                grouped[int(match.group(1))].append(key)
            elif any(target.startswith(h) for h in head_names):
                self.head_keys.append(key)
            else:
                self.outer_keys.append(key)
        self.layer_keys = dict(grouped)
        return unused

    def check_dtypes(self, keys: list[str]) -> None:
        if self.hf_quantizer is not None:  # quantized values and scales go through its dequantizing ops
            keys = [k for k in keys if not (is_packed(k, self.tensors[k].dtype) or is_scale(k))]
        keys = [k for k in keys if self.target_of.get(k) not in self.integer_targets]  # stored as integers
        bad = [k for k in keys if self.tensors[k].dtype not in FLOAT_DTYPES or self.tensors[k].dtype in FP8_HEADER_DTYPES]
        if bad:
            info = self.tensors[bad[0]]
            raise UserError(f"{info.file.name}: {bad[0]!r} is {info.dtype}, not a float type, and config.json names "
                            "no fp8/mxfp4 quantization_config that would dequantize it; the config does not match.")  # fmt: skip

    def load(self, model: nn.Module, keys: list[str], *, device: torch.device | str, dtype: torch.dtype) -> None:
        """Read `keys` from the shards and set them (converted) on `model`, on `device`: `place`
        fed lazily by `read`, so only one chunk is in host memory at a time."""
        self.place(model, self.read(keys), device=device, dtype=dtype)

    def read(self, keys: list[str], *, pin: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        """`keys`' tensors as they are stored (no conversion), in host memory, one chunk at a time.

        Large parameters one chunk each, largest first: converting per-expert tensors to a fused
        one briefly holds both, so placing chunk by chunk bounds the peak at about 4/3 of the layer
        instead of 2x. A chunk is read into one buffer (`read_tensors`), not mmapped, so file pages
        do not count as resident memory. `pin` puts it in page-locked memory so the copy to a CUDA
        device can be asynchronous. Touches no model and no transformers state, so a reader thread
        may run it.
        """
        self.check_dtypes(keys)
        groups: dict[str, list[str]] = defaultdict(list)
        for k in keys:
            groups[self.target_of.get(k, k)].append(k)
        size = {t: sum(self.tensors[k].end - self.tensors[k].start for k in ks) for t, ks in groups.items()}
        total = sum(size.values())
        big = sorted((t for t in groups if size[t] >= total / 10), key=lambda t: -size[t])
        small = [k for t in groups if t not in big for k in groups[t]]  # norms, router, attention: one chunk
        with contextlib.ExitStack() as files:
            handles: dict[Path, Any] = {}
            for chunk in [groups[t] for t in big] + ([small] if small else []):
                for k in chunk:
                    path = self.tensors[k].file
                    if path not in handles:
                        handles[path] = files.enter_context(_open(path))
                yield read_tensors({k: self.tensors[k] for k in chunk}, handles, pin=pin)

    def place(self, model: nn.Module, chunks: Iterable[dict[str, torch.Tensor]], *, device: torch.device | str,
              dtype: torch.dtype) -> None:  # fmt: skip
        """Convert chunks from `read` (dequantize, fuse experts, cast) and set them on `model`, on `device`.

        Pinned chunks are copied to the device first, asynchronously (the copy overlaps the host
        work of the next chunk); transformers then converts them there, as `from_pretrained` does.
        """
        device = torch.device(device)
        mapping = copy.deepcopy(self.mapping)
        with quiet_loading():
            for state in chunks:
                if device.type != "cpu" and all(t.is_pinned() for t in state.values()):
                    state = {k: t.to(device, non_blocking=True) for k, t in state.items()}
                lent = {k: TakeOnce(t, self.tensors[k].dtype) for k, t in state.items()}
                state.clear()  # the reader's dict too: the wrappers hold the only references now
                self._convert(model, lent, device, dtype, mapping)
                del lent
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


class TakeOnce:
    """A stored tensor handed to transformers' loader the way safetensors hands it a lazy slice
    (`get_dtype()`, `t[...]`), giving up its reference on that one read. The loader keeps its
    input (a sorted list of the whole chunk) until the call returns, so a plain tensor would stay
    resident while its converted copy is built: e.g. a layer's FP8 codes next to the dequantized,
    fused experts (measured: peak grew 1.66 MB per MB of layer instead of 1.33)."""

    def __init__(self, tensor: torch.Tensor, header_dtype: str) -> None:
        self.tensor: torch.Tensor | None = tensor
        self.header_dtype = header_dtype

    def get_dtype(self) -> str:
        return self.header_dtype

    def __getitem__(self, index) -> torch.Tensor:
        tensor, self.tensor = self.tensor, None
        if tensor is None:
            raise RuntimeError("TakeOnce: the tensor was already taken")
        return tensor[index]


def _unexpected(skeleton: nn.Module, names: set[str]) -> set[str]:
    """`names` minus those the model declares ignorable (`_keys_to_ignore_on_load_unexpected`, old
    rotary buffers), with the rules transformers applies when it loads the model in memory."""
    from transformers.utils.loading_report import LoadStateDictInfo

    info = LoadStateDictInfo(missing_keys=set(), unexpected_keys=set(names), mismatched_keys=set(), error_msgs=[],
                             conversion_errors={}, skipped_pp_keys=set())  # fmt: skip
    skeleton._adjust_missing_and_unexpected_keys(info)
    return info.unexpected_keys


def _open(path: Path):
    try:
        return open(path, "rb", buffering=0)
    except OSError as e:
        raise UserError(f"cannot read {path} ({e}); re-download or re-save the checkpoint.") from None
