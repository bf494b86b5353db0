"""The loading options' values checked by name, without torch: --dtype, the --device syntax, --prefetch.

Whether the named device exists here (CUDA present, the index in range) needs torch; the loader
checks that (`device_map.resolve_device`) when it places the model.
"""

from __future__ import annotations

import re

from ..runs.errors import UserError

DTYPE_NAMES = ("bfloat16", "float16", "float32")
# torch's device types a model can be placed on, with an optional index (as torch.device parses them)
_DEVICE = re.compile(r"auto|(cpu|cuda|mps|xpu|hpu|meta)(:\d+)?")


def check_dtype(dtype: str) -> None:
    if dtype != "auto" and dtype not in DTYPE_NAMES:
        raise UserError(f"--dtype {dtype!r} unknown; use auto, {', '.join(DTYPE_NAMES)}.")


def check_device_name(device: str) -> None:
    """--device names a device (its availability is checked at loading)."""
    if not _DEVICE.fullmatch(device):
        raise UserError(f"--device {device!r} is not a device; use auto, cpu, cuda, cuda:1 or mps.")


PREFETCH = {"auto": None, "on": True, "off": False}  # --prefetch: scale.layerwise.LayerReader's `prefetch`


def check_prefetch(flag: str | None, stream: bool) -> None:
    """Request-time check of --prefetch: a value of PREFETCH, and only with --stream."""
    if flag is None:
        return
    if flag not in PREFETCH:
        raise UserError(f"--prefetch {flag!r}: use {', '.join(PREFETCH)}.")
    if not stream:
        raise UserError("--prefetch only applies with --stream (layer reads); add --stream or drop --prefetch.")
