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

The result equals `superexperts.evaluate.ablate.ablate(model, experts, mode="zero")` once loaded. It is
written into a temporary sibling folder and renamed into place, so `--out` is complete or absent.

    >>> export_pruned("Qwen3-30B-A3B/", [(1, 68), (2, 92), (3, 82)], "Qwen3-30B-A3B-noSE/")
"""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn
from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

from ...runs.errors import UserError
from ...runs.runfolder import atomic_write_json, base_metadata
from ...runs.safety import os_error_reason
from ...runs.staging import make_staging, owned_name, sweep_stale, usual_mode
from ..adapters import ModelMap, map_model
from ..experts import Expert, experts_json, validate_experts
from .export_target import RECORD, check_export_target
from .files import TensorInfo
from .formats import is_scale, values_per_element
from .reader import Checkpoint
from .skeleton import build_skeleton, layers_path

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


def star_regex(pattern: str) -> re.Pattern:
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
    per_expert: dict[str, set[int]] = {}  # fused target -> expert indices that have their own tensor
    for key in sorted(ckpt.tensors):
        target, pattern = rename_source_key(key, renamings, converters, model.base_model_prefix, model_keys)
        if target not in targets or is_scale(key):  # quantized: zero codes give zero whatever the scale
            continue
        info, wanted = ckpt.tensors[key], targets[target]
        star = star_regex(pattern).search(key) if pattern and "*" in pattern else None
        if star is not None:  # one tensor per expert: all of it or nothing
            per_expert.setdefault(target, set()).add(int(star.group(1)))
            if wanted is None or int(star.group(1)) in wanted:
                ranges.setdefault(info.file, []).append((info.start, info.end))
        else:
            ranges.setdefault(info.file, []).extend(_expert_rows(info, model_params[target], wanted, key))
        found.add(target)
    missing = sorted(set(targets) - found)
    if missing:
        raise UserError(f"no tensor in {ckpt.folder} holds {missing[0]}; cannot export this checkpoint layout.")
    for target, indices in sorted(per_expert.items()):
        absent = sorted((targets[target] or set()) - indices)
        if absent:  # zeroing nothing for it would report a pruned expert that is not
            raise UserError(f"{ckpt.folder} has no tensor for expert {absent[0]} of {target} (a damaged or "
                            "incomplete checkpoint); re-download or re-save it.")  # fmt: skip
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
    usual_mode(staging)  # mkdtemp made it 0700: a serving process or another user must read the export
    if out.exists():  # --overwrite: swap, then remove the old export
        old = out.with_name(owned_name(f".{out.name}.old-"))  # swept at the next export if we die here
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


def export_pruned(model_dir: str | os.PathLike, experts: list[Expert], out_dir: str | os.PathLike, *,
                  mode: str = "zero", overwrite: bool = False, trust_remote_code: bool = False,
                  inputs: Iterable[str | os.PathLike | None] = ()) -> dict[str, Any]:  # fmt: skip
    """Write `model_dir` with `experts` pruned to `out_dir`; returns the export record (also saved).

    `--overwrite` replaces only an earlier export (it holds RECORD) or an empty folder; `out_dir`
    may not be, hold or lie inside `model_dir` or any of `inputs` (e.g. the run folder read).
    """
    out = check_export_target(model_dir, out_dir, mode=mode, overwrite=overwrite, inputs=inputs)
    source = Path(model_dir)
    skeleton, _ = build_skeleton(source, None, trust_remote_code=trust_remote_code, allow_quantized=True)
    model_map = map_model(skeleton)
    experts = validate_experts(model_map, list(experts))
    ckpt = Checkpoint.open(source, skeleton, layers_prefix=layers_path(skeleton))  # checks FP8/MXFP4 scales
    targets = _targets(skeleton, model_map, experts)
    ranges = zero_ranges(ckpt, skeleton, targets)
    record = base_metadata(tool="export", source=str(source), mode=mode, experts=experts_json(experts),
                           zeroed_bytes=sum(e - s for r in ranges.values() for s, e in r),
                           zeroed_parameters=sorted(targets), zeroed_shards=sorted(p.name for p in ranges))  # fmt: skip
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(out.parent, f".{out.name}.old-")  # copies left by an export killed mid-swap
        staging = make_staging(out.parent, f".{out.name}.export-")  # also sweeps killed exports' copies
    except OSError as e:
        raise UserError(f"cannot write next to --out {out_dir} ({os_error_reason(e)}); choose another folder.") from None
    try:
        _write_tree(source, staging, ranges)
        atomic_write_json(staging / RECORD, record)
        _move_into_place(staging, out)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"export to {out_dir} failed ({os_error_reason(e)}); nothing was written.") from None
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
