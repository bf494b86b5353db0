"""Shared fixtures: tiny models of every family (see families.py) and the demo model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

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
