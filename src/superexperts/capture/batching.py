"""`batch_size="auto"`: the largest batch of calibration windows one forward may take.

Two budgets, the smaller wins:
- memory: the activations of one forward (`costs.activation_bytes_per_token`, an estimate on
  the high side) must fit a share of the free memory: 60% of free device memory on cuda
  (torch.cuda.mem_get_info, after the model is loaded), half the available RAM on cpu, a
  quarter of it on mps (unified memory shared with the OS and the GPU driver's own copies);
- tokens per forward: 16,384 on cpu and mps, 65,536 on cuda. On a CPU, throughput stops
  improving once each expert's matmul has a few hundred rows (16k tokens x top-8 / 128 experts
  = 1,024 rows), and larger forwards only grow the working set past the caches; on a GPU the
  cap keeps a forward's temporaries far from the allocator's limits.
The batch is then evened out (10 windows under a cap of 8 run as 5 + 5, not 8 + 2: as many
forwards, less memory).

    >>> choose_batch_size(samples=128, seq_len=2048, bytes_per_token=600_000, budget_bytes=16 << 30,
    ...                   max_tokens=16384)
    8
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..runs.errors import UserError

if TYPE_CHECKING:  # --batch-size is parsed before torch loads; the budgets import it
    import torch
    from torch import nn

AUTO = "auto"
MAX_TOKENS = {"cpu": 16384, "mps": 16384, "cuda": 65536}
# Share of `default_budget` (80% of free cuda memory; half of free RAM otherwise).
BUDGET_SHARE = {"cuda": 0.75, "mps": 0.5, "cpu": 1.0}

BatchSize = int | str


def default_budget(device: torch.device) -> int:
    """Bytes of hidden states kept in memory: 80% of free device memory, half of free RAM on CPU."""
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.8)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def parse_batch_size(value: BatchSize, flag: str = "--batch-size") -> BatchSize:
    """'auto' or an int >= 1 (CLI strings included); anything else is a UserError naming `flag`."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{flag} must be 'auto' or a whole number >= 1, got {value!r}.") from None
    if number < 1 or (isinstance(value, float) and value != number):
        raise UserError(f"{flag} must be 'auto' or a whole number >= 1, got {value!r}.")
    return number


def choose_batch_size(*, samples: int, seq_len: int, bytes_per_token: int, budget_bytes: int, max_tokens: int) -> int:
    """Windows per forward: the most that fit both budgets (at least 1, at most `samples`), evened out."""
    if samples < 1:
        return 1  # the caller reports the missing data
    by_memory = budget_bytes // max(1, bytes_per_token * seq_len)
    cap = max(1, min(samples, by_memory, max_tokens // seq_len))
    forwards = -(-samples // cap)
    return -(-samples // forwards)


def memory_budget(device: torch.device) -> int:
    """Bytes one forward's activations may take on `device` (see the module docstring)."""

    return int(default_budget(device) * BUDGET_SHARE.get(device.type, BUDGET_SHARE["mps"]))


def stable_memory_budget(device: torch.device) -> int:
    """A quarter of the device's total memory, for layer streaming: it does not move with the
    momentary free memory, so a resumed run batches exactly as the interrupted one did (the
    rest holds the layer being streamed and the stored hidden states)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 4
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory()) // 4
    return total_ram() // 4


def total_ram() -> int:
    """Bytes of RAM of this machine (16 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def resolve_batch_size(requested: BatchSize, model: nn.Module, *, samples: int, seq_len: int,
                       device: torch.device | None = None, budget_bytes: int | None = None,
                       logits: bool = False) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """(batch size, what profile.json records about the choice) for `requested` = 'auto' or N.

    `device` defaults to the model's (a meta skeleton needs it given); `logits` when the forward
    computes the full logits (perplexity), which the budget must then hold too.
    """
    requested = parse_batch_size(requested)
    if requested != AUTO:
        return int(requested), {"batch_size_requested": requested}
    import torch

    from ..models.costs import activation_bytes_per_token
    from ..models.shape import model_shape

    device = torch.device(device) if device is not None else next(model.parameters()).device
    per_token = activation_bytes_per_token(model_shape(model), seq_len, logits=logits)
    budget = memory_budget(device) if budget_bytes is None else budget_bytes
    max_tokens = MAX_TOKENS.get(device.type, MAX_TOKENS["cpu"])
    batch = choose_batch_size(samples=samples, seq_len=seq_len, bytes_per_token=per_token, budget_bytes=budget,
                              max_tokens=max_tokens)  # fmt: skip
    return batch, {"batch_size_requested": AUTO,
                   "batch_size_auto": {"device": device.type, "budget_bytes": budget, "max_tokens": max_tokens,
                                       "estimated_bytes_per_token": per_token}}  # fmt: skip
