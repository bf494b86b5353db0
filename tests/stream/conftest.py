"""Checkpoint folders of tiny family models: hub per-expert layout, fused layout, sharded."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import save_file

import families


def save_hub(model, folder: Path, **kwargs) -> Path:
    """transformers 5 writes the hub per-expert layout (experts.7.down_proj.weight) by default."""
    model.save_pretrained(folder, **kwargs)
    return folder


def save_fused(model, folder: Path) -> Path:
    """The in-memory (fused) state dict written as is, with the model's config."""
    folder.mkdir(parents=True)
    model.config.save_pretrained(folder)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if "rotary" not in k}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """{(family, layout): (model, folder)}, built on first use."""
    cache: dict = {}

    def get(family: str, layout: str = "hub"):
        if (family, layout) not in cache:
            model = families.build(family)
            folder = tmp_path_factory.mktemp(f"{family}-{layout}") / "ckpt"
            if layout == "hub":
                save_hub(model, folder)
            elif layout == "sharded":
                save_hub(model, folder, max_shard_size="40KB")
            else:
                save_fused(model, folder)
            cache[family, layout] = (model, folder)
        return cache[family, layout]

    return get
