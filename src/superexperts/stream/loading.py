"""`--stream` for the CLI: what `loading.load_model` gives, without loading any weights.

The model in the returned `Loaded` is the meta skeleton (config, structure, no memory); the
profile itself comes from `stream_profile`, which reads the checkpoint layer by layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import UserError
from ..loading import Loaded, load_tokenizer, resolve_device, resolve_dtype
from ..profile import Profile
from .layerwise import stream_profile
from .skeleton import build_skeleton


def load_skeleton(spec: str, *, device: str = "auto", dtype: str = "auto",
                  trust_remote_code: bool = False) -> tuple[Loaded, torch.device, torch.dtype]:  # fmt: skip
    """(Loaded with the meta skeleton as model, device, dtype) for a local checkpoint folder.

    >>> loaded, device, dtype = load_skeleton("Qwen3-30B-A3B/", device="cuda", dtype="bfloat16")
    """
    path = Path(os.path.expanduser(spec))
    if not path.is_dir():
        raise UserError(f"--stream reads a local checkpoint folder; {spec} is not one (download it first).")
    dev = resolve_device(device)
    skeleton, _ = build_skeleton(path, None, trust_remote_code=trust_remote_code)
    torch_dtype = resolve_dtype(dtype, dev, skeleton.config)
    tokenizer = load_tokenizer(str(path), trust_remote_code, skeleton.get_input_embeddings().weight.shape[0])
    return Loaded(model=skeleton, tokenizer=tokenizer, spec=spec, path=str(path), synthetic=False), dev, torch_dtype


def streaming_profiler(loaded: Loaded, device: torch.device, dtype: torch.dtype, *, state_dir: str | None = None,
                       resume: bool = False) -> Callable[..., Profile]:  # fmt: skip
    """A drop-in for `superexperts.profile(model, input_ids, ...)` that streams `loaded.path`."""

    def profiler(model, input_ids, *, batch_size: int | str = "auto", tokenizer=None, progress: bool = False) -> Profile:
        return stream_profile(loaded.path, input_ids, device=device, dtype=dtype, batch_size=batch_size,
                              state_dir=state_dir, resume=resume, tokenizer=tokenizer, progress=progress)  # fmt: skip

    return profiler
