"""Fixtures for evaluation tests: an offline character-level tokenizer matching the tiny models."""

from __future__ import annotations

import pytest

from families import char_tokenizer


@pytest.fixture(scope="session")
def char_tok():
    return char_tokenizer()


@pytest.fixture
def offline(monkeypatch):
    """No hub access during lm-eval and datasets calls (the tests must run without internet)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
