"""Expert lists: parsing LIST strings and files."""

from __future__ import annotations

import json

import pytest

from superexperts.models.experts import format_experts, load_experts, parse_experts
from superexperts.runs.errors import UserError


def test_parse_list_roundtrip():
    experts = parse_experts("1:68, 2:92,4:shared")
    assert experts == [(1, 68), (2, 92), (4, "shared")]
    assert format_experts(experts) == "1:68,2:92,4:shared"


@pytest.mark.parametrize("text", ["", "1", "a:3", "1:x", ","])
def test_parse_bad(text):
    with pytest.raises(UserError):
        parse_experts(text)


def test_load_files(tmp_path):
    se = tmp_path / "super_experts.json"
    se.write_text(json.dumps({"super_experts": [{"layer": 1, "expert": 3, "max_abs_output": 9.0},
                                                {"layer": 2, "expert": "shared"}]}))
    assert load_experts(se) == [(1, 3), (2, "shared")]
    plain = tmp_path / "list.txt"
    plain.write_text("1:3  # the big one\n2:5\n")
    assert load_experts(plain) == [(1, 3), (2, 5)]
    with pytest.raises(UserError, match="not found"):
        load_experts(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"layer": 1}]')
    with pytest.raises(UserError, match="bad record"):
        load_experts(bad)
