"""Bidi and zero-width characters from token texts are shown escaped, never written raw (issue 14.11)."""

from __future__ import annotations

import json
import unicodedata

from report_helpers import make_profile, parse_page
from superexperts.identify.profile_run import save_run
from superexperts.identify.rules import paper
from superexperts.report import write_report
from superexperts.report.page import visible

# right-to-left override, zero-width space, left-to-right isolate, a tag character (outside the BMP)
TRICKY = "ab\u202edc\u200b\u2066x\U000e0041"
SHOWN = "ab\\u202edc\\u200b\\u2066x\\udb40\\udc41"


def _hidden_characters(text: str) -> set[str]:
    return {c for c in text if unicodedata.category(c) in ("Cf", "Co", "Cn", "Cs") or (c < " " and c not in "\n\t")}


def test_visible_escapes_what_repr_escapes():
    for c in ["\u202e", "\u200b", "\u2066", "\x7f", "\xa0", "\u2028", "\r"]:
        assert visible(c) == f"\\u{ord(c):04x}" and repr(c) != f"'{c}'"  # the CLI (repr) escapes it too
    assert visible("é ü\n\tthe <s>") == "é ü\n\tthe <s>"
    assert json.loads(f'"{visible(TRICKY)}"') == TRICKY  # still a valid JSON literal of the same text


def test_report_shows_tricky_tokens_escaped(tmp_path):
    prof = make_profile()
    prof.expert_stats["token_text"] = TRICKY
    prof.layer_stats["top1_token_text"] = TRICKY
    run = tmp_path / "run"
    save_run(run, prof, paper(prof.expert_stats, prof.num_layers))
    page = write_report(run).read_text()
    assert _hidden_characters(page) == set()
    assert page.count(SHOWN) >= 4  # SE sentences, SE table, candidates, massive-activation table
    tables = parse_page(page).tables
    cells = [c for rows in tables.values() for row in rows for c in row if SHOWN in c]
    assert cells and all(c == f"\"{SHOWN}\"" for c in cells)  # shown as the JSON literal, quotes included
