"""Fixtures for evaluation tests: an offline character-level tokenizer matching the tiny models."""

from __future__ import annotations

import string

import pytest
import transformers as tf
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

import families

SPECIALS = ["<pad>", "<unk>", "<eos>"]


def char_tokenizer() -> tf.PreTrainedTokenizerFast:
    """One token per printable character (103 ids, inside the tiny models' 128-token vocabulary)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(string.printable))}
    assert len(vocab) <= families.VOCAB
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every char, newlines too
    backend.decoder = decoders.Fuse()
    return tf.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
                                      eos_token="<eos>")


@pytest.fixture(scope="session")
def char_tok():
    return char_tokenizer()


@pytest.fixture
def offline(monkeypatch):
    """No hub access during lm-eval and datasets calls (the tests must run without internet)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
