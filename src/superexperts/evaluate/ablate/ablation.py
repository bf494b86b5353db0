"""`ablate(model, experts, mode=...)`: reversible, in-memory expert ablation.

Three modes (issue 4): `zero` (still routed, contributes nothing: the paper's pruning),
`mean` (output replaced by its mean over calibration tokens, Owen et al. 2025) and `skip`
(removed from routing: router logit -inf, top-k picks another expert). Everything changed is
undone by `Ablation.restore()`, which the context manager calls on exit, also on exceptions.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ...models.experts import Expert, validate_experts
from ...runs.errors import UserError, did_you_mean

if TYPE_CHECKING:  # the modes are named (and --mode checked) before torch loads; applying one imports it
    from torch import nn

Undo = Callable[[], None]
# Each mode is the module of its name, whose `apply_<mode>(model_map, experts, undo, means)` checks
# what it needs before changing anything.
MODES = ("zero", "mean", "skip")


def check_mode(mode: str, flag: str = "--mode") -> None:
    if mode not in MODES:
        raise UserError(f"{flag} {mode!r} is unknown. {did_you_mean(mode, list(MODES))}Available: {', '.join(MODES)}.")


class Ablation:
    """Handle of an applied ablation; `restore()` undoes it (idempotent)."""

    def __init__(self, experts: list[Expert], mode: str) -> None:
        self.experts = experts
        self.mode = mode
        self._undo: list[Undo] = []

    @property
    def active(self) -> bool:
        return bool(self._undo)

    def restore(self) -> None:
        while self._undo:  # last change first: nested edits unwind in order
            self._undo.pop()()

    def __repr__(self) -> str:
        state = "active" if self.active else "restored"
        return f"Ablation(mode={self.mode!r}, experts={self.experts}, {state})"


def apply_ablation(model: nn.Module, experts: list[Expert], *, mode: str = "zero", means=None) -> Ablation:
    """Ablate `experts` until `.restore()` is called (persistent mode).

    >>> handle = apply_ablation(model, [(1, 68), (2, 92)], mode="zero")
    >>> ...; handle.restore()
    """
    from ...models.adapters import map_model

    check_mode(mode, "ablation mode")
    apply = getattr(importlib.import_module(f"{__package__}.{mode}"), f"apply_{mode}")
    model_map = map_model(model)
    experts = validate_experts(model_map, list(experts))
    handle = Ablation(experts, mode)
    try:
        apply(model_map, experts, handle._undo, means)
    except BaseException:
        handle.restore()  # a mode that fails half-way leaves nothing behind
        raise
    return handle


@contextlib.contextmanager
def ablate(model: nn.Module, experts: list[Expert], *, mode: str = "zero", means=None) -> Iterator[Ablation]:
    """Ablate `experts` inside the block; the model is restored exactly on exit.

    >>> with ablate(model, [(1, 68), (2, 92), (4, "shared")], mode="zero"):
    ...     loss = model(input_ids, labels=input_ids).loss
    """
    handle = apply_ablation(model, experts, mode=mode, means=means)
    try:
        yield handle
    finally:
        handle.restore()
