"""Resumable layer streaming: a state folder with one file per finished layer.

    state/
      state.json        {"format", "fingerprint", "last_layer", "complete"}  (written last, atomically)
      layer-00003.pt    tracker state of layer 3 (see state.py)
      hidden-00004/     hidden states entering layer 4, one safetensors file per batch

The fingerprint covers config.json, every shard's size and header, the calibration tokens and
the settings, so a state folder is never resumed against another model or other data.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from ..models.checkpoints.files import weight_files
from ..runs.errors import UserError
from ..runs.runfolder import atomic_write, atomic_write_json, tensor_sha256

FORMAT = "superexperts.scale-state/1"
STATE_FILE = "state.json"


def _header_digest(path: Path) -> str:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return hashlib.sha256(f.read(n)).hexdigest()


def fingerprint(folder: Path, input_ids: torch.Tensor, settings: dict[str, Any]) -> str:
    """Hash of what determines the result: model files (sizes + headers), data and settings."""
    files = [(p.name, p.stat().st_size, _header_digest(p)) for p in weight_files(folder)]
    payload = {"config": hashlib.sha256((folder / "config.json").read_bytes()).hexdigest(),
               "files": files, "data": tensor_sha256(input_ids), "settings": settings}  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class RunState:
    """The state folder of one streaming run.

    >>> state = RunState(Path("state"), fp)
    >>> done = state.start(resume=True)  # {layer: layer_state} already finished
    """

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = folder
        self.fingerprint = fingerprint

    def _read(self) -> dict[str, Any] | None:
        path = self.folder / STATE_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
            if data["format"] == FORMAT and isinstance(data["fingerprint"], str):
                data["last_layer"] = int(data["last_layer"])
                return data
        except (ValueError, KeyError, TypeError, OSError):  # ValueError covers JSON and UTF-8 errors
            pass
        raise UserError(f"{path} is not a superexperts state file (damaged, or another tool's); pass a new or empty "
                        f"--state-dir, or delete {self.folder} if it is yours.")  # fmt: skip

    def start(self, *, resume: bool) -> dict[int, dict]:
        """Finished layers' states when resuming a matching run; otherwise a clean folder."""
        data = self._read()
        if data is None and self.folder.is_dir() and any(self.folder.iterdir()):
            raise UserError(f"--state-dir {self.folder} holds other files; pass an empty or new folder.")
        if data is not None and resume and int(data["last_layer"]) >= 0:
            if data["fingerprint"] != self.fingerprint:
                raise UserError(f"state in {self.folder} is from another model, data or settings; "
                                "delete it or run without --resume.")  # fmt: skip
            return {i: self._load_layer(i) for i in range(int(data["last_layer"]) + 1)}
        if data is not None:  # a fresh run replaces our own old state
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        # Marks the folder as ours from the start, so a run killed inside layer 0 can be resumed.
        atomic_write_json(self.folder / STATE_FILE, {"format": FORMAT, "fingerprint": self.fingerprint,
                                                      "last_layer": -1, "complete": False})  # fmt: skip
        return {}

    def _layer_path(self, layer: int) -> Path:
        return self.folder / f"layer-{layer:05d}.pt"

    def _load_layer(self, layer: int) -> dict:
        try:
            state = torch.load(self._layer_path(layer), weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"state of layer {layer} in {self.folder} is unreadable ({why}); "
                            "delete the folder and run without --resume.") from None  # fmt: skip
        if not isinstance(state, dict) or not {"experts", "massive"} <= state.keys():
            raise UserError(f"state of layer {layer} in {self.folder} is not a layer state; "
                            "delete the folder and run without --resume.")  # fmt: skip
        return state

    def save_layer(self, layer: int, state: dict, *, complete: bool = False) -> None:
        """Persist a finished layer, then move the progress marker past it (both atomic)."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write(self._layer_path(layer), buffer.getvalue())
        atomic_write_json(self.folder / STATE_FILE, {"format": FORMAT, "fingerprint": self.fingerprint,
                                                      "last_layer": layer, "complete": complete})  # fmt: skip
