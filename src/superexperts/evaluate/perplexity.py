"""Perplexity with the reference's protocol (GPTQ-style non-overlapping windows).

The token stream of the whole evaluation text is cut into non-overlapping windows of `seq_len`
tokens; the incomplete tail is dropped. Each window is scored on its own (no context carried over):
every token after the first is predicted from the tokens before it in the window, so a window
contributes `seq_len - 1` predicted tokens. Perplexity = exp(total NLL / predicted tokens); with
equal-length windows this is the reference's exp(mean over windows of the window's mean NLL).

Text protocols (the reference's, as in GPTQ):
- WikiText-2: the test split's rows joined by "\\n\\n", tokenized as one string (`wikitext2_text`).
- C4: the first 1100 validation documents joined by " ", first 256 windows kept (`c4_text`,
  then `perplexity(..., max_windows=256)`).

Example:
    >>> ids = token_stream(wikitext2_text(rows), tokenizer)
    >>> perplexity(model, ids, seq_len=2048)["perplexity"]
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..capture.data import cut_windows
from ..models.adapters import input_device
from ..runs.errors import UserError

C4_DOCUMENTS = 1100  # GPTQ's C4 evaluation: first 1100 validation documents ...
C4_WINDOWS = 256  # ... cut into 256 windows


def wikitext2_text(rows: Iterable[str]) -> str:
    """WikiText-2 evaluation text: the test split's `text` rows joined by a blank line."""
    return "\n\n".join(rows)


def c4_text(documents: Iterable[str], max_documents: int = C4_DOCUMENTS) -> str:
    """C4 evaluation text: the first `max_documents` validation documents joined by a space."""
    return " ".join(doc for _, doc in zip(range(max_documents), documents))


def token_stream(text: str, tokenizer) -> torch.LongTensor:
    """Tokenize `text` as ONE string (the reference's protocol) into a 1-D LongTensor.

    Special tokens are added the way the tokenizer does by default (e.g. a leading BOS), as the
    reference does. Example: `token_stream(wikitext2_text(rows), tok)[:5]`.
    """
    if not text:
        raise UserError("The evaluation text is empty; pass a file or dataset with text in it.")
    # The stream is far longer than the model's context on purpose: windows are cut afterwards.
    ids = tokenizer(text, return_tensors="pt", verbose=False)["input_ids"]
    return ids[0].long()


def _as_stream(token_ids: torch.Tensor) -> torch.Tensor:
    if not isinstance(token_ids, torch.Tensor) or token_ids.is_floating_point() or token_ids.is_complex():
        raise UserError("perplexity expects token ids as an integer torch tensor (1-D or [1, N]).")
    if token_ids.dim() == 2 and token_ids.shape[0] == 1:
        token_ids = token_ids[0]
    if token_ids.dim() != 1:
        raise UserError(
            f"perplexity expects one token stream (1-D or [1, N]), got shape {tuple(token_ids.shape)}; "
            "concatenate the texts first."
        )
    return token_ids.long()


def perplexity_windows(token_ids: torch.Tensor, seq_len: int, max_windows: int | None) -> torch.Tensor:
    """(windows, seq_len) non-overlapping windows; the incomplete tail is dropped."""
    if seq_len < 2:
        raise UserError(f"seq_len must be at least 2 (one context token and one predicted), got {seq_len}.")
    return cut_windows(_as_stream(token_ids), seq_len, max_windows)


def check_vocab(model: torch.nn.Module, windows: torch.Tensor) -> None:
    vocab = model.get_input_embeddings().num_embeddings
    low, high = int(windows.min()), int(windows.max())
    if low < 0 or high >= vocab:
        raise UserError(
            f"Token id {high if high >= vocab else low} is outside the model's vocabulary (size {vocab}); "
            "tokenize with the model's own tokenizer."
        )


@torch.inference_mode()
def window_nll(model: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL of each window, (windows,) float64; logits scored in float32."""
    logits = model(input_ids=windows, use_cache=False).logits  # (B, T, V)
    # Shift: position t predicts token t+1, as in the model's own loss.
    pred = logits[:, :-1].float()
    target = windows[:, 1:].to(pred.device)  # with a device map the logits may live elsewhere
    nll = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="none")
    return nll.view(target.shape).sum(dim=1).double()


def perplexity(
    model: torch.nn.Module,
    token_ids: torch.Tensor,
    *,
    seq_len: int = 2048,
    batch_size: int = 1,
    max_windows: int | None = None,
    progress: bool = False,
) -> dict:
    """Perplexity of `model` on a token stream, non-overlapping `seq_len` windows.

    Returns {"perplexity", "nll_sum", "tokens_scored", "windows", "seq_len"}; runs on the model's
    device in `batch_size` windows per forward. `max_windows` keeps only the first windows (C4: 256).

    Example:
        >>> perplexity(model, torch.randint(0, 100, (4096,)), seq_len=1024)["windows"]
        4
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1, got {batch_size}.")
    windows = perplexity_windows(token_ids, seq_len, max_windows)
    check_vocab(model, windows)
    device = input_device(model)
    was_training = model.training
    model.eval()  # dropout would make the number depend on the RNG
    nll_sum = 0.0
    try:
        for start in tqdm(range(0, len(windows), batch_size), desc="perplexity", unit="batch",
                          disable=not progress):
            batch = windows[start : start + batch_size].to(device)
            nll_sum += float(window_nll(model, batch).sum())
    finally:
        model.train(was_training)
    tokens_scored = len(windows) * (seq_len - 1)
    mean_nll = nll_sum / tokens_scored
    return {
        # A collapsed model can exceed float range: report inf rather than raise OverflowError.
        "perplexity": math.exp(mean_nll) if mean_nll < 709 else math.inf,
        "nll_sum": nll_sum,
        "tokens_scored": tokens_scored,
        "windows": len(windows),
        "seq_len": seq_len,
    }
