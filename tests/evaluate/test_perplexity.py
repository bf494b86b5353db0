"""Perplexity matches a straightforward per-window loop; windows follow the reference's protocol."""

from __future__ import annotations

import math

import pytest
import torch

import families
from superexperts.evaluate.perplexity import c4_text, perplexity, token_stream, wikitext2_text
from superexperts.runs.errors import UserError


def reference_loop(model, stream: torch.Tensor, seq_len: int) -> tuple[float, int]:
    """The GPTQ-style loop written out: per window, log_softmax, gather each next token's log-prob."""
    nll, scored = 0.0, 0
    for w in range(stream.numel() // seq_len):
        window = stream[w * seq_len : (w + 1) * seq_len]
        with torch.no_grad():
            logits = model(input_ids=window[None]).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        for t in range(seq_len - 1):
            nll -= float(logp[t, window[t + 1]])
            scored += 1
    return nll, scored


@pytest.mark.parametrize("family", ["qwen3_moe", "deepseek_v3", "gpt_oss"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_matches_reference_loop(family, batch_size):
    model = families.build(family)
    stream = families.random_ids(samples=1, seq_len=16 * 5 + 7, seed=1)[0]  # 5 windows + a dropped tail
    got = perplexity(model, stream, seq_len=16, batch_size=batch_size)
    nll, scored = reference_loop(model, stream, 16)
    assert got["windows"] == 5 and got["seq_len"] == 16
    assert got["tokens_scored"] == scored == 5 * 15
    assert got["nll_sum"] == pytest.approx(nll, rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(nll / scored), rel=1e-5)


def test_matches_models_own_loss(tiny_qwen3):
    """GPTQ's formula exp(mean over windows of the model's loss) on equal windows is the same number."""
    stream = families.random_ids(samples=1, seq_len=48, seed=2)[0]
    with torch.no_grad():
        losses = [float(tiny_qwen3(input_ids=w[None], labels=w[None]).loss) for w in stream.view(3, 16)]
    got = perplexity(tiny_qwen3, stream, seq_len=16, batch_size=2)
    assert got["perplexity"] == pytest.approx(math.exp(sum(losses) / 3), rel=1e-5)


def test_accepts_batch_row_and_max_windows(tiny_qwen3):
    stream = families.random_ids(samples=1, seq_len=64)
    one_row = perplexity(tiny_qwen3, stream, seq_len=16)
    flat = perplexity(tiny_qwen3, stream[0], seq_len=16)
    assert one_row == flat
    first_two = perplexity(tiny_qwen3, stream, seq_len=16, max_windows=2)
    assert first_two["windows"] == 2
    assert first_two["nll_sum"] == pytest.approx(reference_loop(tiny_qwen3, stream[0, :32], 16)[0], rel=1e-5)


def test_restores_training_mode(tiny_qwen3):
    tiny_qwen3.train()
    perplexity(tiny_qwen3, families.random_ids(1, 32)[0], seq_len=16)
    assert tiny_qwen3.training


def test_text_protocols(char_tok):
    rows = [" = Title = ", "", " Some text . "]
    assert wikitext2_text(rows) == " = Title = \n\n\n\n Some text . "
    assert c4_text(iter(["a", "b", "c"]), max_documents=2) == "a b"
    ids = token_stream(wikitext2_text(rows), char_tok)
    assert ids.dim() == 1 and ids.dtype == torch.long
    assert char_tok.decode(ids.tolist()) == wikitext2_text(rows)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"token_ids": torch.arange(40), "seq_len": 1}, "seq_len must be at least 2"),
        ({"token_ids": torch.arange(10), "seq_len": 16}, "fewer than one window"),
        ({"token_ids": torch.zeros(2, 32, dtype=torch.long), "seq_len": 16}, "one token stream"),
        ({"token_ids": torch.rand(32), "seq_len": 16}, "integer torch tensor"),
        ({"token_ids": torch.full((32,), families.VOCAB), "seq_len": 16}, "outside the model's vocabulary"),
        ({"token_ids": torch.arange(32), "seq_len": 16, "batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input(tiny_qwen3, kwargs, match):
    with pytest.raises(UserError, match=match):
        perplexity(tiny_qwen3, **kwargs)


def test_empty_text(char_tok):
    with pytest.raises(UserError, match="empty"):
        token_stream("", char_tok)
