"""Repetition metrics on hand-made sequences whose values are counted by hand in each test."""

from __future__ import annotations

import pytest

from superexperts.evaluate.repetition import distinct_n, periodic_runs, repetition_metrics


def test_period_three_loop():
    m = repetition_metrics("a b c a b c a b c")
    assert m["tokens"] == 9
    # distinct: 3 unigrams of 9; bigrams ab bc ca -> 3 of 8; trigrams abc bca cab -> 3 of 7
    assert m["distinct_1"] == pytest.approx(3 / 9)
    assert m["distinct_2"] == pytest.approx(3 / 8)
    assert m["distinct_3"] == pytest.approx(3 / 7)
    assert (m["longest_run"], m["run_period"], m["run_repeats"]) == (9, 3, 3.0)
    assert m["loop_fraction"] == pytest.approx(6 / 9)  # the first "a b c" is the original


def test_no_loop():
    m = repetition_metrics("the cat sat on a mat")
    assert m["distinct_1"] == m["distinct_2"] == m["distinct_3"] == 1.0
    assert (m["longest_run"], m["run_period"], m["loop_fraction"]) == (0, 0, 0.0)


def test_prefix_then_degenerate_phrase():
    # "the way it 's ," repeated 3 times after a 3-token prefix: 3 + 15 tokens, period 5
    tokens = ["so", "it", "goes"] + ["the", "way", "it", "'s", ","] * 3
    m = repetition_metrics(tokens)
    assert (m["longest_run"], m["run_period"]) == (15, 5)
    assert m["loop_fraction"] == pytest.approx(10 / 18)


def test_smallest_period_wins_and_single_token_loop():
    m = repetition_metrics([7, 7, 7, 7])  # period 1 (and 2) both span 4 tokens
    assert (m["longest_run"], m["run_period"], m["run_repeats"]) == (4, 1, 4.0)
    assert m["loop_fraction"] == pytest.approx(3 / 4)


def test_less_than_two_periods_is_not_a_loop():
    # "a b c a b" repeats period 3 for 2 tokens only (5 < 2 * 3)
    m = repetition_metrics("a b c a b")
    assert m["longest_run"] == 0 and m["loop_fraction"] == 0.0
    assert repetition_metrics("a b c a b", min_periods=1)["run_period"] == 3


def test_two_loops_cover_their_copies():
    # "x y x y" (period 2, copies at 2,3) then "z z z" (period 1, copies at 5,6) -> 4 of 7
    m = repetition_metrics("x y x y z z z")
    assert m["loop_fraction"] == pytest.approx(4 / 7)
    assert (m["longest_run"], m["run_period"]) == (4, 2)


def test_max_period_limits_detection():
    tokens = list(range(10)) * 2
    assert repetition_metrics(tokens)["run_period"] == 10
    assert repetition_metrics(tokens, max_period=9)["longest_run"] == 0


def test_building_blocks():
    assert periodic_runs(list("abcabcx"), 3) == [(3, 5)]
    assert distinct_n([1, 2], 3) == 0.0
    assert repetition_metrics([]) == repetition_metrics("")
    assert repetition_metrics([])["loop_fraction"] == 0.0
