"""What every evaluation recipe measures a model on: perplexity data, windows, lm-eval tasks, prompts.

Declared once here. `Measures` (windows kept, batch size, tasks, prompts) is shared by the requests
(`EvalFields`: prune-eval, quant-eval) and by what the conditions are run on
(`ablate.conditions.EvalPlan`, built by `ablate.conditions.eval_plan`); keyword-only, so each
request puts its own required fields first.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ..capture.batching import AUTO, BatchSize, parse_batch_size
from ..runs.errors import check_at_least


@dataclass(kw_only=True)
class Measures:
    max_windows: int | None = None
    batch_size: BatchSize = AUTO  # windows per forward; auto: resolved once the model is loaded
    tasks: list[str] = field(default_factory=list)
    task_manager: Any = None  # from evaluate.lm_eval.check_tasks
    limit: int | None = None
    num_fewshot: int | None = None
    prompts: list[str] = field(default_factory=list)
    max_new_tokens: int = 64

    def resolve_batch(self, model, *, seq_len: int, device=None) -> dict[str, Any]:
        """--batch-size auto -> the most windows whose forward, full logits included (perplexity),
        fits the device's budget (`batching.resolve_batch_size`); sets `batch_size` to that number and
        returns what the output records about the choice."""
        from ..capture.batching import resolve_batch_size

        windows = self.max_windows or 1 << 20  # the budget and the token cap decide, not the count
        self.batch_size, info = resolve_batch_size(self.batch_size, model, samples=windows, seq_len=seq_len,
                                                   device=device, logits=True)  # fmt: skip
        return info | {"batch_size": self.batch_size}

    def measures(self) -> dict[str, Any]:
        """These fields by name (to build an `EvalPlan` from a request)."""
        return {f.name: getattr(self, f.name) for f in fields(Measures)}


@dataclass(kw_only=True)
class EvalFields(Measures):
    ppl: str | None = None  # data spec; None with a real model = no perplexity
    seq_len: int | None = None  # None: 2048 (demo 64)
    data: str | None = None  # calibration data (None: built-in text)
    samples: int | None = None

    def check_ranges(self, **extra: int | None) -> None:
        """Each numeric flag against its lower bound; `extra` adds flag=value pairs that must be >= 0."""
        self.batch_size = parse_batch_size(self.batch_size)
        bounds = [("--seq-len", self.seq_len, 2), ("--max-new-tokens", self.max_new_tokens, 1),
                  ("--samples", self.samples, 1), ("--max-windows", self.max_windows, 1),
                  ("--limit", self.limit, 1), ("--num-fewshot", self.num_fewshot, 0)]  # fmt: skip
        bounds += [(f"--{name.replace('_', '-')}", value, 0) for name, value in extra.items()]
        for name, value, low in bounds:
            check_at_least(name, value, low)
