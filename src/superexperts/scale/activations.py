"""Hidden states of every calibration batch between two decoder layers.

Layer-by-layer profiling pushes ALL batches through one layer before loading the next, so the
hidden states of all batches must be kept: on the device while they fit a budget, spilled to
disk (one safetensors file per batch) beyond it. Each layer reads generation g and writes g+1;
a generation on disk is complete only after `commit`, which resume relies on.

    store = ActivationStore(device="cpu", budget_bytes=2 << 30, spill_dir=Path("spill"))
    h = store.read(0); store.write(0, layer(h)); ...; store.commit()
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..runs.errors import UserError


class ActivationStore:
    """Per-batch hidden states of the current layer boundary, in memory up to a budget.

    `persist=True` also writes every batch to disk (for resume), keeping the in-memory copy.
    """

    def __init__(self, *, device: torch.device | str, budget_bytes: int, spill_dir: Path | None,
                 persist: bool = False, generation: int = 0) -> None:  # fmt: skip
        if persist and spill_dir is None:
            raise ValueError("persist needs a spill_dir")
        self.device = torch.device(device)
        self.budget_bytes = budget_bytes
        self.spill_dir = spill_dir
        self.persist = persist
        self.generation = generation  # the generation `read` returns
        self._current: dict[int, torch.Tensor] = {}
        self._next: dict[int, torch.Tensor] = {}
        self.spilled_batches = 0  # how many writes went to disk only (for reports)

    def _folder(self, generation: int) -> Path:
        assert self.spill_dir is not None
        return self.spill_dir / f"hidden-{generation:05d}"

    def _in_memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in (self._current, self._next) for t in d.values())

    def read(self, batch: int) -> torch.Tensor:
        """Hidden states entering the current layer for `batch`; the memory copy is released."""
        if batch in self._current:
            return self._current.pop(batch)
        path = self._folder(self.generation) / f"{batch:06d}.safetensors"
        try:
            return load_file(path, device=str(self.device))["hidden"]
        except (SafetensorError, OSError, KeyError) as e:  # a resumed state folder that was damaged
            raise UserError(f"saved hidden states {path} are unreadable ({type(e).__name__}); delete "
                            f"{self.spill_dir} and run again without --resume.") from None  # fmt: skip

    def write(self, batch: int, hidden: torch.Tensor) -> None:
        """Hidden states leaving the current layer for `batch` (input of the next layer)."""
        size = hidden.numel() * hidden.element_size()
        fits = self._in_memory_bytes() + size <= self.budget_bytes or self.spill_dir is None
        if fits:
            self._next[batch] = hidden
        if self.persist or not fits:
            folder = self._folder(self.generation + 1)
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{batch:06d}.safetensors"
            tmp = target.with_suffix(".tmp")
            save_file({"hidden": hidden.detach().contiguous().cpu()}, tmp)
            os.replace(tmp, target)
            self.spilled_batches += not fits

    def commit(self) -> None:
        """Close the layer: the written generation becomes the one `read` returns."""
        self._current, self._next = self._next, {}
        self.generation += 1

    def drop_old(self, *, keep_current: bool = True) -> None:
        """Remove disk generations other than the current one (after the caller recorded progress)."""
        if self.spill_dir is None or not self.spill_dir.is_dir():
            return
        for folder in self.spill_dir.glob("hidden-*"):
            if not keep_current or int(folder.name.split("-")[1]) != self.generation:
                shutil.rmtree(folder, ignore_errors=True)
