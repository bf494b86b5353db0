"""`superexperts sinks` end to end on the demo, and bad input that must leave nothing behind."""

from __future__ import annotations

import json

import pytest

from superexperts.cli import main

TEXT = "The quick brown fox , jumps over the lazy dog . The end of the story is near"


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "sinks"
    code = main(["sinks", "--text", TEXT, "--prune", "1:13", "--random", "1", "--layers", "4", "--heads", "0,3",
                 "--out", str(out)])  # one SE layer: no layer-wise conditions, keeps the test short
    assert code == 0
    data = json.loads((out / "sinks.json").read_text())
    names = [c["name"] for c in data["conditions"]]
    assert names == ["original", "super", "random-0"]
    original, super_ = data["conditions"][0], data["conditions"][1]
    assert "d_sink" not in original and len(super_["d_sink"]) == len(original["sink_mass"]) == 8
    assert super_["experts"] == [{"layer": 1, "expert": 13}]
    assert data["conditions"][2]["experts"][0]["layer"] in range(8)
    assert 0.0 <= original["sink_rate"] <= 1.0
    assert "t > 0" in data["query_aggregation"]
    assert data["command"] == "sinks" and data["synthetic"] is True and data["data_sha256"]
    assert [r["expert"] for r in data["router"]] == [13]
    for name in ("sinks_chain", "sinks_d_sink", "sinks_maps"):
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.svg").stat().st_size > 0
    assert "mean D_sink" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--layers", "99"], "--layers [99] out of range"),
    (["--heads", "4"], "--heads [4] out of range"),
    (["--layers", "a,b"], "expected integers"),
    (["--text", "   "], "--text is empty"),
    (["--prune", "1:999"], "out of range"),
    (["--random", "-1"], "--random must be >= 0"),
    (["--sink-keys", "top0"], "--sink-keys"),
    (["--epsilon", "1.5"], "--epsilon"),
    (["--from", "/nonexistent/run"], "no super_experts.json"),
])  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "sinks"
    assert main(["sinks", "--text", TEXT, *argv, "--out", str(out)] if "--text" not in argv
                else ["sinks", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists() or not any(out.iterdir())


def test_prune_super_on_a_real_model_needs_the_se_list(tmp_path, capsys):
    assert main(["sinks", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "--from RUN_DIR" in capsys.readouterr().err
