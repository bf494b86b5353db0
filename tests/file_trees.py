"""Helpers for tests over files on disk: did a command leave the user's files alone; a damaged checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file


def tree_digest(root: Path) -> str:
    """Hash of every path, link target and file content under `root` (an independent 'untouched' check)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        elif path.is_file():
            h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def odd_layers_on_disk(checkpoint_dir: Path, path: Path, **changes: str) -> Path:
    """A --device-map FILE for a Qwen3-style checkpoint: odd decoder layers offloaded to disk, the rest on
    the CPU; `changes` override entries (e.g. a bad module name)."""
    layers = json.loads((checkpoint_dir / "config.json").read_text())["num_hidden_layers"]
    placement = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    placement |= {f"model.layers.{i}": "disk" if i % 2 else "cpu" for i in range(layers)}
    path.write_text(json.dumps(placement | changes))
    return path


def drop_tensor(folder: Path, key: str) -> None:
    """Remove checkpoint tensor `key` from `folder`'s shards (and its index, when there is one)."""
    for path in folder.glob("*.safetensors"):
        with safe_open(path, framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
        if state.pop(key, None) is not None:
            save_file(state, path, metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text())
        del data["weight_map"][key]
        index.write_text(json.dumps(data))
