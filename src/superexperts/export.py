"""Export a pruned checkpoint without loading the model: copy the shards, zero the SEs' down_proj.

Zeroing never changes a tensor's size, so every shard is copied as is (in-kernel copy, header
untouched) and only the byte ranges of the pruned experts' down projections are overwritten
with zeros (+0.0 is all-zero bits in every float format, FP8 included). Which checkpoint tensor
holds an expert is found with transformers' own key rules, so both layouts work:

- fused (`mlp.experts.down_proj` [E, H, I], GPT-OSS [E, I, H] + `down_proj_bias` [E, H]):
  the expert's slice along dim 0;
- hub per-expert (`mlp.experts.7.down_proj.weight`, Mixtral `block_sparse_moe.experts.7.w2.weight`)
  and shared experts (`shared_experts.down_proj.weight`): the whole tensor;
- quantized as published: the FP8 bytes (DeepSeek-V3/R1, Qwen3-*-FP8) or MXFP4 `down_proj_blocks`
  (gpt-oss) of those tensors, scales untouched: FP8 0x00 and e2m1 code 0 are +0.0, so the
  dequantized expert is exactly zero whatever its scales, and the file keeps its format.

The result equals `superexperts.ablate.ablate(model, experts, mode="zero")` once loaded. It is
written into a temporary sibling folder and renamed into place, so `--out` is complete or absent.

    >>> export_pruned("Qwen3-30B-A3B/", [(1, 68), (2, 92), (3, 82)], "Qwen3-30B-A3B-noSE/")
"""

from __future__ import annotations

import copy
import errno
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn
from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

from .ablate.spec import Expert, experts_json, validate_experts
from .errors import UserError
from .io import atomic_write_json
from .meta import base_metadata
from .models.adapters import ModelMap, map_model
from .quantized import is_scale, values_per_element
from .stream.checkpoint import Checkpoint, TensorInfo
from .stream.skeleton import build_skeleton, layers_path

MODES = ("zero",)
ByteRange = tuple[int, int]  # absolute [start, end) in a shard


def down_parameters(model: nn.Module, model_map: ModelMap, expert: Expert) -> dict[str, int | None]:
    """Model parameter names making up one expert's down projection -> index along dim 0 (None: all)."""
    names = {id(m): n for n, m in model.named_modules()}
    layer, index = expert
    block = model_map.block(layer)
    if index == "shared" or block.layout == "modulelist":
        down = block.shared_down if index == "shared" else block.expert_down(index)
        return {f"{names[id(down)]}.{p}": None for p, t in down.named_parameters(recurse=False)}
    prefix = names[id(block.experts)]
    bias = getattr(block.experts, "down_proj_bias", None)
    return {f"{prefix}.down_proj": index} | ({f"{prefix}.down_proj_bias": index} if bias is not None else {})


def _star_regex(pattern: str) -> re.Pattern:
    """'mlp.experts.*.down_proj.weight' -> a regex capturing the expert index at '*'."""
    return re.compile(re.escape(pattern).replace(r"\*", r"(\d+)"))


def zero_ranges(ckpt: Checkpoint, model: nn.Module, targets: dict[str, set[int] | None]) -> dict[Path, list[ByteRange]]:
    """Byte ranges to zero per shard for `targets` (model parameter -> expert indices, None = whole)."""
    rules = copy.deepcopy(ckpt.mapping)
    renamings = [r for r in rules if isinstance(r, WeightRenaming)]
    converters = [r for r in rules if isinstance(r, WeightConverter)]
    model_params = dict(model.named_parameters())
    model_keys = model.state_dict()
    ranges: dict[Path, list[ByteRange]] = {}
    found: set[str] = set()
    for key in sorted(ckpt.tensors):
        target, pattern = rename_source_key(key, renamings, converters, model.base_model_prefix, model_keys)
        if target not in targets or is_scale(key):  # quantized: zero codes give zero whatever the scale
            continue
        info, wanted = ckpt.tensors[key], targets[target]
        star = _star_regex(pattern).search(key) if pattern and "*" in pattern else None
        if star is not None:  # one tensor per expert: all of it or nothing
            if wanted is None or int(star.group(1)) in wanted:
                ranges.setdefault(info.file, []).append((info.start, info.end))
        else:
            ranges.setdefault(info.file, []).extend(_expert_rows(info, model_params[target], wanted, key))
        found.add(target)
    missing = sorted(set(targets) - found)
    if missing:
        raise UserError(f"no tensor in {ckpt.folder} holds {missing[0]}; cannot export this checkpoint layout.")
    return ranges


def _expert_rows(info: TensorInfo, param, wanted: set[int] | None, key: str) -> list[ByteRange]:
    """Byte ranges of rows `wanted` along dim 0 of a fused tensor (row-major, so each is contiguous)."""
    if wanted is None:
        return [(info.start, info.end)]
    if not info.shape or info.shape[0] != param.shape[0] or math.prod(info.shape) * values_per_element(key) != param.numel():
        raise UserError(f"{key} has shape {info.shape}, the model expects {tuple(param.shape)} with experts "
                        "along dim 0; cannot export this checkpoint layout.")  # fmt: skip
    row = (info.end - info.start) // info.shape[0]
    return [(info.start + e * row, info.start + (e + 1) * row) for e in sorted(wanted)]


def _zero(path: Path, ranges: list[ByteRange], chunk: int = 64 << 20) -> None:
    with open(path, "r+b") as f:
        for start, end in sorted(ranges):
            f.seek(start)
            while start < end:
                n = min(chunk, end - start)
                f.write(bytes(n))
                start += n


def _write_tree(source: Path, staging: Path, ranges: dict[Path, list[ByteRange]]) -> None:
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        target = staging / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)  # sendfile/copy_file_range: the kernel copies
        if path in ranges:
            _zero(target, ranges[path])


def _move_into_place(staging: Path, out: Path) -> None:
    if out.exists():  # --overwrite: swap, then remove the old export
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


def export_pruned(model_dir: str | os.PathLike, experts: list[Expert], out_dir: str | os.PathLike, *,
                  mode: str = "zero", overwrite: bool = False, trust_remote_code: bool = False) -> dict[str, Any]:  # fmt: skip
    """Write `model_dir` with `experts` pruned to `out_dir`; returns the export record (also saved)."""
    if mode not in MODES:
        raise UserError(f"--mode {mode!r} cannot be exported; available: {', '.join(MODES)} (mean/skip need the model).")
    source, out = Path(model_dir), Path(out_dir)
    if not source.is_dir():
        raise UserError(f"model folder not found: {source}; export works on a local checkpoint folder.")
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise UserError(f"--out {out} is inside the source checkpoint; choose another folder.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(f"--out {out} exists and is not empty; pass --overwrite or choose another folder.")
    skeleton, _ = build_skeleton(source, None, trust_remote_code=trust_remote_code, allow_quantized=True)
    model_map = map_model(skeleton)
    experts = validate_experts(model_map, list(experts))
    ckpt = Checkpoint.open(source, skeleton, layers_prefix=layers_path(skeleton))  # checks FP8/MXFP4 scales
    targets = _targets(skeleton, model_map, experts)
    ranges = zero_ranges(ckpt, skeleton, targets)
    record = base_metadata(tool="export", source=str(source), mode=mode, experts=experts_json(experts),
                           zeroed_bytes=sum(e - s for r in ranges.values() for s, e in r),
                           zeroed_parameters=sorted(targets), zeroed_shards=sorted(p.name for p in ranges))  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        _write_tree(source, staging, ranges)
        atomic_write_json(staging / "superexperts_export.json", record)
        _move_into_place(staging, out)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        why = "the disk is full" if e.errno == errno.ENOSPC else e.strerror or str(e)
        raise UserError(f"export to {out} failed ({why}); nothing was written.") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return record


def _targets(model: nn.Module, model_map: ModelMap, experts: list[Expert]) -> dict[str, set[int] | None]:
    """Model parameter -> expert rows to zero (None: the whole tensor)."""
    targets: dict[str, set[int] | None] = {}
    for expert in experts:
        for name, index in down_parameters(model, model_map, expert).items():
            if index is None:
                targets[name] = None
            elif name not in targets or targets[name] is not None:
                targets[name] = (targets.get(name) or set()) | {index}
    return targets
