"""Which model a run was made from, in a form another folder or machine can check (issue 23).

A local folder is named by its absolute path; a hub id by the snapshot commit it resolved to in the
local cache (never a moving ref such as "main": transformers 5 no longer records `_commit_hash`).
Both carry a fingerprint: short hashes of config.json and of the weight files (config only when the
weights are not there yet, e.g. a hub model whose config alone is cached).

    >>> model_identity("Qwen/Qwen3-30B-A3B")
    {'model_path': 'Qwen/Qwen3-30B-A3B', 'revision': '9c1b…', 'fingerprint': {'config': '…', 'weights': '…'}}
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def hub_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The cached snapshot folder a hub id (at `revision`, default its main ref) resolves to; None
    when the id is not in the local cache. Reads the cache only: no network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id (a missing local folder, a path with dots...)
        return None
    return Path(found).parent if isinstance(found, str) else None


def folder_fingerprint(folder: Path) -> dict[str, str] | None:
    """`checkpoint_fingerprint` (config + weights), or the config's alone when no safetensors weights
    are there; None without a config.json."""
    from .checkpoints.files import checkpoint_fingerprint

    if not (folder / "config.json").is_file():
        return None
    return checkpoint_fingerprint(folder) or {"config": hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()[:16]}


def model_identity(path: str) -> dict[str, Any]:
    """{"model_path", "revision", "fingerprint"} of a local folder (absolute path, no revision) or a
    hub id (the id, its cached snapshot commit and that snapshot's fingerprint)."""
    if Path(path).is_dir():
        return {"model_path": os.path.abspath(path), "revision": None,
                "fingerprint": folder_fingerprint(Path(os.path.abspath(path)))}  # fmt: skip
    snapshot = hub_snapshot(path)
    return {"model_path": path, "revision": snapshot.name if snapshot else None,
            "fingerprint": folder_fingerprint(snapshot) if snapshot else None}  # fmt: skip


def describe_source(identity: dict[str, Any]) -> str:
    """'the local folder /abs/q' or 'the hub model org/name at revision 9c1b…': a local folder and a hub
    id with the same weights are told apart in every mismatch message."""
    path = identity.get("model_path") or "an unrecorded model"
    if os.path.isabs(str(path)):
        return f"the local folder {path}"
    if "fingerprint" not in identity and not identity.get("revision"):  # a run made before absolute paths
        return f"{path} (a path relative to the folder the run was made in)"
    revision = identity.get("revision")
    return f"the hub model {path}" + (f" at revision {revision}" if revision else "")
