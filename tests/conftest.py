"""Shared fixtures: tiny models of every family (see families.py) and the demo model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# No network in tests: a missing hub id must fail at once, not after ~20 s of retries. huggingface_hub
# reads these when first imported, so they are set before anything imports it (and patched below in
# case a plugin imported it earlier).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import huggingface_hub.constants
import pytest
import torch

huggingface_hub.constants.HF_HUB_OFFLINE = True

sys.path.insert(0, str(Path(__file__).parent))
import families

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(params=families.FAMILIES)
def family_model(request):
    """(family name, tiny random model) for every supported family."""
    return request.param, families.build(request.param)


@pytest.fixture
def tiny_qwen3():
    return families.build("qwen3_moe")


@pytest.fixture
def calib_ids():
    return families.random_ids(samples=4, seq_len=16)


@pytest.fixture(scope="session")
def demo():
    """(model, tokenizer) of the built-in demo, with its planted Super Experts (DEMO_SUPER_EXPERTS,
    DEMO_OUTLIER in superexperts.models.demo). Treat as read-only; ablations must restore it."""
    from superexperts.models.demo import build_demo

    return build_demo()


@pytest.fixture(scope="session")
def demo_calib(demo):
    """16 windows of 64 tokens of the built-in text, BOS first (the demo's default calibration)."""
    from superexperts.data import calibration

    return calibration(None, demo[1], seq_len=64, samples=16, seed=0)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """The demo saved as a local checkpoint folder (what `superexperts profile` with no MODEL loads)."""
    from superexperts.models.demo import demo_checkpoint

    return demo_checkpoint(tmp_path_factory.mktemp("cache") / "demo")
