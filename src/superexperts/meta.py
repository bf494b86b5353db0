"""Run metadata: everything needed to reproduce a printed number."""

from __future__ import annotations

import hashlib
import platform
import sys
import time
from importlib import metadata
from typing import Any

import torch

from . import __version__

_LIBS = ("torch", "transformers", "numpy", "pandas", "safetensors", "accelerate", "datasets", "lm_eval")


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "superexperts": __version__, "platform": platform.platform()}
    for name in _LIBS:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            continue
    return versions


def tensor_sha256(t: torch.Tensor) -> str:
    """Hash of a token tensor: identifies the exact calibration data of a run."""
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def base_metadata(*, tool: str, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "tool": "superexperts",
        "tool_version": __version__,
        "command": tool,
        "created_unix": round(time.time(), 3),
        "seed": seed,
        "versions": library_versions(),
        **extra,
    }
