"""The safetensors files of a checkpoint folder: index, headers checked against file sizes, and the
tensors' bytes read straight from the ranges the headers give (layer streaming).

Shared by in-memory loading (damaged-file checks), layer streaming, export, quantized checkpoints
and `plan`.
"""

from __future__ import annotations

import ctypes
import json
import math
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...runs.errors import UserError
from .folder import INDEX_NAME, SINGLE_NAME, checkpoint_fingerprint, weight_files  # noqa: F401 - the files' names

# Every dtype the safetensors format defines, as torch holds it.
TORCH_DTYPES = {"BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "F8_E4M3": torch.float8_e4m3fn,
                "F8_E5M2": torch.float8_e5m2, "F8_E8M0": torch.float8_e8m0fnu, "I16": torch.int16,
                "U16": torch.uint16, "F16": torch.float16, "BF16": torch.bfloat16, "I32": torch.int32,
                "U32": torch.uint32, "F32": torch.float32, "I64": torch.int64, "U64": torch.uint64,
                "F64": torch.float64}  # fmt: skip
# Bytes per element of every dtype the safetensors format defines.
DTYPE_BYTES = {name: dtype.itemsize for name, dtype in TORCH_DTYPES.items()}
ALIGN = 64  # bytes: each tensor of a chunk buffer starts on a cache line (any dtype's view is aligned)


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


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc): loading per-expert tensors fragments the
    heap, and without this the resident size creeps up layer after layer."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        pass


def read_tensors(infos: dict[str, TensorInfo], files: dict[Path, Any], *, pin: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of `infos`, read from their open (unbuffered, binary) `files` into ONE buffer, each
    tensor a view of it. One allocation: freed as a whole when the last view goes, and large enough
    that the allocator maps it apart from the heap, so the memory goes back to the system at once.
    Read tensor by tensor (safetensors' reader), a layer's ~1 MB expert tensors landed in the heap
    and stayed resident after they were freed, while the fused tensor built from them took new
    pages: streaming's peak grew 2.0 MB per MB of bf16 decoder layer. `pin`: page-locked buffer.
    safetensors stores little-endian values, viewed here as they are stored."""
    if sys.byteorder != "little":
        raise UserError("layer streaming reads safetensors' little-endian bytes as they are; this machine is "
                        "big-endian: load the model in memory (without --stream).")  # fmt: skip
    offsets, total = {}, 0
    for key, info in infos.items():
        offsets[key] = total
        total += -(-(info.end - info.start) // ALIGN) * ALIGN
    buffer = torch.empty(total, dtype=torch.uint8, pin_memory=pin)
    raw = memoryview(buffer.numpy())
    out = {}
    for key, info in infos.items():
        start, size = offsets[key], info.end - info.start
        f = files[info.file]
        f.seek(info.start)
        done = 0
        while done < size:
            n = f.readinto(raw[start + done : start + size])
            if not n:
                raise UserError(f"cannot read {info.file}: it ends before {key!r} does (changed after its header "
                                "was read?); re-download or re-save the checkpoint.")  # fmt: skip
            done += n
        out[key] = buffer[start : start + size].view(TORCH_DTYPES[info.dtype]).reshape(info.shape)
    return out
