"""Repetition metrics of a generated sequence: measure the "the way it's, the way it's ..." collapse.

Pure functions over a sequence of tokens (ids or strings); no model needed.

Definitions, for a sequence t[0..N-1]:
- distinct-n = (number of distinct n-grams) / (number of n-grams, N - n + 1); 0.0 when N < n.
- A *loop* of period p is a maximal stretch t[s..e] with t[i] == t[i-p] for every i in s+p..e
  that holds at least `min_periods` full periods: e - s + 1 >= min_periods * p. Periods are
  1..`max_period`. "a b c a b c a b c" is one loop of period 3 and length 9.
- longest_run = length in tokens of the longest loop (0 when there is none) and run_period its
  period (the smallest period reaching that length; 0 when there is none); run_repeats = length
  / period (3.0 above).
- loop_fraction = share of the N positions that REPEAT an earlier period inside a loop, i.e.
  positions i with t[i] == t[i-p] inside a loop of period p (the loop's first period is not
  counted: it is the original, the rest are copies). "a b c a b c a b c" -> 6/9.

Example:
    >>> repetition_metrics("the way it 's , the way it 's , the way it 's ,")["run_period"]
    5
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

MAX_PERIOD = 32  # degenerate loops are phrases or sentences: a few to a few dozen tokens
MIN_PERIODS = 2


def distinct_n(tokens: Sequence[Hashable], n: int) -> float:
    """Distinct n-grams / all n-grams; 0.0 when the sequence is shorter than n."""
    total = len(tokens) - n + 1
    if total <= 0:
        return 0.0
    return len({tuple(tokens[i : i + n]) for i in range(total)}) / total


def periodic_runs(tokens: Sequence[Hashable], period: int) -> list[tuple[int, int]]:
    """Maximal runs (first, last) of positions i >= period with tokens[i] == tokens[i - period].

    A run (a, b) means tokens[a - period .. b] repeat with that period: a stretch of
    b - a + 1 + period tokens.
    """
    runs, start = [], None
    for i in range(period, len(tokens) + 1):
        match = i < len(tokens) and tokens[i] == tokens[i - period]
        if match and start is None:
            start = i
        elif not match and start is not None:
            runs.append((start, i - 1))
            start = None
    return runs


def repetition_metrics(
    tokens: Sequence[Hashable] | str,
    *,
    max_period: int = MAX_PERIOD,
    min_periods: int = MIN_PERIODS,
) -> dict[str, float | int]:
    """distinct-1/2/3, longest loop (tokens, period, repeats) and loop_fraction (see module doc).

    `tokens` is a sequence of token ids or strings; a plain string is split on whitespace.
    """
    if isinstance(tokens, str):
        tokens = tokens.split()
    tokens = list(tokens)
    covered = [False] * len(tokens)
    longest, longest_period = 0, 0
    for period in range(1, max_period + 1):
        for first, last in periodic_runs(tokens, period):
            length = last - first + 1 + period
            if length < min_periods * period:
                continue
            covered[first : last + 1] = [True] * (last - first + 1)
            if length > longest:  # strict: the smallest period wins ties
                longest, longest_period = length, period
    return {
        "tokens": len(tokens),
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
        "distinct_3": distinct_n(tokens, 3),
        "longest_run": longest,
        "run_period": longest_period,
        "run_repeats": longest / longest_period if longest_period else 0.0,
        "loop_fraction": sum(covered) / len(tokens) if tokens else 0.0,
    }
