"""Greedy generation samples with repetition metrics, one prompt at a time (no padding effects).

Example:
    >>> out = generate(model, tokenizer, ["The capital of France is"], max_new_tokens=32)
    >>> out[0]["text"], out[0]["metrics"]["loop_fraction"]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from ..runs.errors import UserError
from .repetition import repetition_metrics

__all__ = ["generate", "repetition_metrics"]


def _continuation(model: torch.nn.Module, prompt_ids: torch.Tensor, max_new_tokens: int,
                  eos_ids: set[int], pad_id: int | None) -> list[int]:
    """Greedy new token ids after `prompt_ids` (1, T), cut before the first end-of-sequence token."""
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                              eos_token_id=sorted(eos_ids) or None, pad_token_id=pad_id)
    with _only_config(model, config):
        out = model.generate(input_ids=prompt_ids, attention_mask=torch.ones_like(prompt_ids),
                             generation_config=config)
    new = out[0, prompt_ids.shape[1] :].tolist()
    for i, token in enumerate(new):
        if token in eos_ids:
            return new[:i]
    return new


@contextlib.contextmanager
def _only_config(model: torch.nn.Module, config: GenerationConfig) -> Iterator[None]:
    """Generate with `config` alone. transformers fills every unset field from the checkpoint's
    generation_config, whose sampling settings, repetition_penalty or no_repeat_ngram_size would
    hide the very loops these samples are meant to show; so that config is swapped out meanwhile."""
    saved = model.generation_config
    model.generation_config = config
    try:
        yield
    finally:
        model.generation_config = saved


def _eos_ids(model: torch.nn.Module, tokenizer) -> set[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = ids if isinstance(ids, list) else [ids]
    return {i for i in ids + [tokenizer.eos_token_id] if i is not None}


@torch.inference_mode()
def generate(model: torch.nn.Module, tokenizer, prompts: list[str], *, max_new_tokens: int = 64,
             progress: bool = False) -> list[dict]:
    """Greedy continuation of each prompt: [{"prompt", "text", "token_ids", "metrics"}].

    `token_ids` are the new tokens only (up to, not including, an end-of-sequence token);
    `metrics` are `repetition_metrics` over them. Runs on the model's device.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise UserError("Generation needs a list of non-empty prompts (one per line in the prompts file).")
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
    device = model.get_input_embeddings().weight.device  # where input ids go, also with a device map
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos_ids), None)
    was_training = model.training
    model.eval()
    samples = []
    try:
        for prompt in tqdm(prompts, desc="generate", unit="prompt", disable=not progress):
            prompt_ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
            new = _continuation(model, prompt_ids, max_new_tokens, eos_ids, pad_id)
            samples.append({"prompt": prompt, "text": tokenizer.decode(new, skip_special_tokens=True),
                            "token_ids": new, "metrics": repetition_metrics(new)})
    finally:
        model.train(was_training)
    return samples
