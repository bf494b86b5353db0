"""What a number rests on: ratios to the original and the random-control verdict (pure helpers)."""

from __future__ import annotations

from superexperts.report.basis import change_note, perplexity_basis, ratio

SPREAD = {"min": 11.55, "max": 11.66, "n": 3}


def test_a_change_inside_or_within_the_control_spread_is_noise():
    assert change_note(11.57, original=11.60, spread=SPREAD) == "inside the random-control spread: noise"
    # -0.26%: smaller than the controls' own spread (0.11), though outside their band
    assert change_note(11.50, original=11.53, spread=SPREAD).endswith("within the control spread (0.11): noise")
    assert change_note(54.2, original=11.60, spread=SPREAD) == "above the random-control spread: a real difference"
    assert change_note(11.2, original=11.60, spread=SPREAD) == "below the random-control spread: a real difference"


def test_without_two_seeds_nothing_is_judged():
    assert change_note(54.2, original=11.6, spread={"min": 11.6, "max": 11.6, "n": 1}).startswith("no spread")
    assert change_note(54.2, original=11.6, spread=None).startswith("no spread")


def test_ratio_and_basis_text():
    assert ratio(54.2, 11.6) == "4.67x" and ratio(None, 11.6) == "" and ratio(1.0, 0) == ""
    text = perplexity_basis({"spec": "demo-heldout", "protocol": "bos-windows", "tokens": 1300, "seq_len": 64,
                             "max_windows": None})  # fmt: skip
    assert text == "perplexity on demo-heldout (windows that each start with BOS): 20 window(s) of 64 tokens"
