"""Greedy generation equals a plain argmax loop; metrics are computed over the new tokens."""

from __future__ import annotations

import pytest
import torch

import families
from superexperts.evaluate.generation import generate
from superexperts.evaluate.repetition import repetition_metrics
from superexperts.runs.errors import UserError


def argmax_loop(model, tok, prompt: str, steps: int) -> list[int]:
    """Greedy decoding without a KV cache: full forward, argmax of the last position, append."""
    ids = tok(prompt)["input_ids"]
    new = []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + new]), use_cache=False).logits[0, -1]
        token = int(logits.argmax())
        if token == tok.eos_token_id:
            break
        new.append(token)
    return new


@pytest.mark.parametrize("family", ["qwen3_moe", "mixtral"])
def test_greedy_matches_argmax_loop(family, char_tok):
    model = families.build(family)
    prompts = ["The way it is", "2 + 2 ="]
    out = generate(model, char_tok, prompts, max_new_tokens=12)
    assert [o["prompt"] for o in out] == prompts
    for o, prompt in zip(out, prompts):
        assert o["token_ids"] == argmax_loop(model, char_tok, prompt, 12)
        assert o["text"] == char_tok.decode(o["token_ids"], skip_special_tokens=True)
        assert o["metrics"] == repetition_metrics(o["token_ids"])


@pytest.mark.parametrize("prompts, kwargs", [([], {}), ([""], {}), (["ok"], {"max_new_tokens": 0})])
def test_bad_input(tiny_qwen3, char_tok, prompts, kwargs):
    with pytest.raises(UserError):
        generate(tiny_qwen3, char_tok, prompts, **kwargs)


def test_ignores_checkpoint_sampling_and_penalties(tiny_qwen3, char_tok):
    """A checkpoint's repetition_penalty / sampling must not hide loops: output stays the argmax loop."""
    saved = tiny_qwen3.generation_config
    saved.update(do_sample=True, temperature=0.6, top_p=0.9, repetition_penalty=1000.0, no_repeat_ngram_size=2)
    out = generate(tiny_qwen3, char_tok, ["hello"], max_new_tokens=10)
    assert out[0]["token_ids"] == argmax_loop(tiny_qwen3, char_tok, "hello", 10)
    assert tiny_qwen3.generation_config is saved and saved.repetition_penalty == 1000.0
