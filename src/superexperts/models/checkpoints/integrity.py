"""Is a checkpoint complete, and is the model loaded in memory exactly its weights?

transformers' `from_pretrained` random-initialises every parameter a checkpoint lacks and drops
tensors the model has no place for, then runs normally: a silently wrong model (a missing
attention weight, a remote-code class whose names do not match). Its loading info names them;
`check_loading_info` refuses unless the user opts in. Damaged files (truncated, bad header,
missing shard) are found before loading with the checks `--stream` uses (stream/checkpoint.py).

    >>> check_weight_files(Path("Qwen3-30B-A3B"))           # one-line UserError when damaged
    >>> check_loading_info(info, "Qwen3-30B-A3B", allow_missing=False)
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ...runs.errors import UserError, warn
from .files import INDEX_NAME, read_tensor_index

# Weight files transformers reads besides safetensors (left to it: we only check safetensors).
OTHER_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
OPT_IN = "--allow-missing-weights"


def check_weight_files(folder: Path) -> None:
    """Refuse a local checkpoint whose safetensors are damaged, incomplete or absent (one line).

    Folders holding only other formats (pytorch_model.bin) are left to transformers.
    """
    if not folder.is_dir():
        return
    has_safetensors = (folder / INDEX_NAME).is_file() or any(folder.glob("*.safetensors"))
    if has_safetensors or not any((folder / name).is_file() for name in OTHER_WEIGHTS):
        read_tensor_index(folder)


def _examples(keys: set[str], what: str) -> str:
    first = sorted(keys)[:2]
    return f"{len(keys)} {what} ({', '.join(first)}{', ...' if len(keys) > 2 else ''})"


def check_loading_info(info: dict[str, Any], path: str, *, allow_missing: bool = False) -> None:
    """Refuse a load that left parameters random (missing), ignored tensors (unexpected) or
    changed shapes (mismatched); with `allow_missing`, missing/unexpected only warn."""
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda m: m[0])
    if mismatched:
        name, found, expected = mismatched[0]
        raise UserError(f"{path}: {name} has shape {tuple(found)} in the checkpoint but config.json implies "
                        f"{tuple(expected)} (a missing or damaged tensor?); re-download or re-save it.")
    missing, unexpected = set(info.get("missing_keys") or ()), set(info.get("unexpected_keys") or ())
    if not missing and not unexpected:
        return
    parts = ([_examples(missing, "weight(s) missing from the checkpoint")] if missing else []) + (
        [_examples(unexpected, "checkpoint tensor(s) the model has no place for")] if unexpected else [])  # fmt: skip
    what = f"{path}: {' and '.join(parts)}"
    if not allow_missing:
        raise UserError(f"{what}; the model would run with random weights there. Use a complete checkpoint "
                        f"that matches its config and code, or pass {OPT_IN} to load it anyway.")  # fmt: skip
    warn(f"{what}; loaded anyway ({OPT_IN}): missing weights are random.")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers logs a multi-line load report for what `check_loading_info` reports in one line."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


@functools.cache
def hub_unreachable(timeout: float = 3.0) -> bool:
    """True when offline mode is set or the hub cannot be reached (no network).

    Then only the local cache is read, so an uncached hub id fails at once instead of after ~27 s
    of retries. Behind a proxy we cannot probe the way the client goes, so we let it try.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    if any(os.environ.get(v) for v in PROXY_VARS):
        return False
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return True
    return False


def hub_kwargs(path: str) -> dict[str, Any]:
    """`local_files_only=True` for a hub id while the hub is unreachable; {} otherwise."""
    return {"local_files_only": True} if not Path(path).exists() and hub_unreachable() else {}
