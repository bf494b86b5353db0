"""The published-SE registry: data transcription, lookup by name/path, agreement with a run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from expert_tables import expert_table
from superexperts.cli import main
from superexperts.identify import known, rules


def test_every_entry_is_consistent_with_its_table1_row():
    for entry in known.entries():
        t = entry["table1"]
        assert t["super_experts"] == len(entry["super_experts"]), entry["name"]
        assert t["top_values"] == sorted(t["top_values"], reverse=True)
        # max/10 printed with one decimal: recompute from the printed max.
        assert t["max_over_10"] == pytest.approx(t["top_values"][0] / 10, abs=0.05), entry["name"]
        assert entry["source"]["paper"] == "arXiv 2507.23279" and entry["source"]["version"]
    deepseek = known.lookup("deepseek-ai/DeepSeek-V2-Lite")
    assert known.known_experts(deepseek) == [(3, 54), (4, 38)]
    assert deepseek["alternative_super_experts"]["version"].startswith("v1")


@pytest.mark.parametrize("query, name", [
    ("Qwen/Qwen3-30B-A3B", "Qwen3-30B-A3B"),
    ("qwen/qwen3-30b-a3b-thinking-2507", "Qwen3-30B-A3B"),
    ("/models/Qwen3-30B-A3B-Instruct-2507/", "Qwen3-30B-A3B"),
    ("/hf/hub/models--Qwen--Qwen3-30B-A3B-Base/snapshots/0123abcd", "Qwen3-30B-A3B"),
    ("deepseek-ai/DeepSeek-V2-Lite-Chat", "DeepSeek-V2-Lite"),
    ("DEEPSEEK-R1", "DeepSeek-R1"),
    ("C:\\models\\Mixtral-8x7B-Instruct-v0.1", "Mixtral-8x7B"),
])  # fmt: skip
def test_lookup_matches_hub_ids_and_paths(query, name):
    assert known.lookup(query)["name"] == name


@pytest.mark.parametrize(
    "query", ["Qwen/Qwen3-30B-A3B-FP8", "mistralai/Mixtral-8x22B-v0.1", "", None, "/models/x"]
)
def test_lookup_misses_return_none(query):
    assert known.lookup(query) is None


def test_agreement_with_a_verdict_that_finds_the_published_ses():
    values = np.full((4, 128), 0.5) + np.arange(128) * 1e-3
    values[1, 68], values[2, 92], values[3, 82] = 744.0, 540.0, 430.0
    verdict = rules.paper(expert_table(values), 4, include_layers=1.0)
    result = known.agreement(verdict, known.lookup("Qwen/Qwen3-30B-A3B"))
    assert result["agrees"] and result["missing"] == [] and result["extra"] == []
    assert [(r["layer"], r["expert"]) for r in result["found"]] == [(1, 68), (2, 92), (3, 82)]
    assert json.loads(json.dumps(result)) == result
    assert known.agreement_line(result).startswith("agrees with the published SEs of Qwen3-30B-A3B")


def test_agreement_names_missing_and_extra_experts():
    result = known.agreement([(1, 68), (2, 92), (5, "shared")], known.lookup("Qwen/Qwen3-30B-A3B"))
    assert not result["agrees"]
    assert result["missing"] == [{"layer": 3, "expert": 82}]
    assert result["extra"] == [{"layer": 5, "expert": "shared"}]
    line = known.agreement_line(result)
    assert "found 2 of 3; missing 3:82; extra 5:shared" in line and "\n" not in line


def test_agreement_recognises_the_v1_list_of_deepseek_v2_lite():
    entry = known.lookup("deepseek-ai/DeepSeek-V2-Lite")
    result = known.agreement([(2, 54), (3, 38)], entry)
    assert not result["agrees"] and result["matches_alternative"].startswith("v1")
    assert "v1" in known.agreement_line(result)
    assert known.agreement([(3, 54), (4, 38)], entry)["agrees"]


def test_known_cli_lists_all_and_one(capsys):
    assert main(["known"]) == 0
    out = capsys.readouterr().out
    assert all(e["name"] in out for e in known.entries()) and "8:24,8:shared,12:190" in out
    assert main(["known", "mistralai/Mixtral-8x7B-Instruct-v0.1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Mixtral-8x7B: Super Experts 1:3") and "5600, 302, 286, 258, 253" in out
    assert main(["known", "Qwen/Qwen3-30B-A3B", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["super_experts"][0] == {"layer": 1, "expert": 68}


def test_known_cli_unknown_model_is_a_one_line_error(capsys):
    assert main(["known", "Qwen3-30B"]) == 2
    err = capsys.readouterr().err
    assert "no published Super Experts for 'Qwen3-30B'" in err and err.count("\n") == 1
