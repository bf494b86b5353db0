"""A checkpoint folder's safetensors files and their fingerprint, found without torch: the run
checks (is this the model a run was profiled on?) answer before it loads. `files` reads the tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...runs.errors import UserError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


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


FINGERPRINT_SAMPLES = 64  # 4 KiB reads per weight file beyond its header: a few MB for any checkpoint
WHOLE_FILE_BYTES = 16 << 20  # smaller files are hashed whole


def checkpoint_fingerprint(folder: Path) -> dict[str, str] | None:
    """Short hashes identifying a local checkpoint: its config.json, and its weight files (each
    one's size, header and evenly spaced samples of its bytes; small files whole). A copy in another
    folder has the same fingerprint, other weights of the same architecture another. None when
    `folder` is not a checkpoint folder with safetensors weights.

    >>> checkpoint_fingerprint(Path("ckpt"))
    {'config': '3f2a…', 'weights': '9c1b…'}
    """
    import hashlib

    if not (folder / "config.json").is_file():
        return None
    try:
        files = weight_files(folder)
    except UserError:
        return None
    weights = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        weights.update(f"{path.name}:{size}\0".encode())
        with open(path, "rb") as f:
            if size <= WHOLE_FILE_BYTES:
                weights.update(f.read())
                continue
            for i in range(FINGERPRINT_SAMPLES):
                f.seek(i * (size - 4096) // (FINGERPRINT_SAMPLES - 1))
                weights.update(f.read(4096))
    config = hashlib.sha256((folder / "config.json").read_bytes())
    return {"config": config.hexdigest()[:16], "weights": weights.hexdigest()[:16]}
