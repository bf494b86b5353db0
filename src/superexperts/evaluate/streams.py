"""Perplexity data: a `--data` spec -> the token stream the reference's protocol scores.

Text loading is `superexperts.capture.data.load_texts`; this module only applies the evaluation protocol:
- C4 (`c4`): the first 1100 validation documents joined by " ", first 256 windows (GPTQ's C4 eval);
- everything else (WikiText-2, files, folders, datasets): documents joined by "\\n\\n".

Example:
    >>> stream = eval_stream("wikitext2", tokenizer)
    >>> perplexity(model, stream.token_ids, seq_len=2048, max_windows=stream.max_windows)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..runs.runfolder import tensor_sha256
from .perplexity import C4_WINDOWS, c4_text, token_stream, wikitext2_text


@dataclass(frozen=True)
class EvalStream:
    """A tokenized evaluation text, with how it was made (goes into every output's metadata)."""

    token_ids: torch.Tensor  # (tokens,)
    spec: str
    protocol: str
    max_windows: int | None = None

    def describe(self) -> dict:
        return {"spec": self.spec, "protocol": self.protocol, "tokens": int(self.token_ids.numel()),
                "max_windows": self.max_windows, "sha256": tensor_sha256(self.token_ids)}


def eval_stream(spec: str | None, tokenizer, flag: str = "--data") -> EvalStream:
    """Load `spec` (see `superexperts.capture.data`) and tokenize it as one stream for `perplexity`."""
    from ..capture.data import load_texts

    docs, joiner = load_texts(spec, flag)
    name = spec or "builtin"
    if joiner == "":  # data.py marks C4-style document collections with an empty joiner
        text = c4_text(docs)
        return EvalStream(token_stream(text, tokenizer), name,
                          f"first 1100 documents joined by ' ', first {C4_WINDOWS} windows (GPTQ C4)",
                          max_windows=C4_WINDOWS)
    return EvalStream(token_stream(wikitext2_text(docs), tokenizer), name, "documents joined by '\\n\\n'")


def bos_window_stream(spec: str, tokenizer, seq_len: int, flag: str = "--ppl") -> EvalStream:
    """Every `seq_len` window = BOS + the next seq_len - 1 tokens of the text, flattened (so
    `perplexity(..., seq_len=seq_len)` cuts exactly these windows). lm-eval's rolling windows prefix
    each window with one token the same way. The demo is scored this way because its sink is planted
    on the BOS token, where real models' sinks form on whatever token comes first."""
    from ..capture.data import load_texts

    docs, _ = load_texts(spec, flag)
    body = tokenizer(wikitext2_text(docs), add_special_tokens=False, return_tensors="pt").input_ids[0]
    n = body.numel() // (seq_len - 1)
    bos = torch.full((n, 1), tokenizer.bos_token_id, dtype=body.dtype)
    windows = torch.cat([bos, body[: n * (seq_len - 1)].view(n, seq_len - 1)], dim=1)
    return EvalStream(windows.reshape(-1), spec, f"each {seq_len}-token window = BOS + the next {seq_len - 1} "
                      "tokens of the documents joined by '\\n\\n' (lm-eval rolling-window style)")
