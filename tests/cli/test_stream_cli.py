"""`superexperts profile MODEL --stream` writes the same run as the in-memory path; `export` round-trips."""

from __future__ import annotations

import json

from superexperts.cli import main
from superexperts.models.demo import DEMO_SUPER_EXPERTS


def _profile(demo_dir, out, *extra):
    argv = ["profile", str(demo_dir), "--samples", "4", "--seq-len", "32", "--device", "cpu", "--no-report",
            "--out", str(out), *extra]  # fmt: skip
    assert main(argv) == 0
    return json.loads((out / "profile.json").read_text())


def test_stream_flag_gives_the_in_memory_run(demo_dir, tmp_path):
    in_memory = _profile(demo_dir, tmp_path / "mem")
    streamed = _profile(demo_dir, tmp_path / "stream", "--stream", "--state-dir", str(tmp_path / "state"))
    assert streamed["expert_stats"] == in_memory["expert_stats"]
    assert streamed["layer_stats"] == in_memory["layer_stats"]
    assert streamed["meta"]["streamed"] is True
    found = json.loads((tmp_path / "stream" / "super_experts.json").read_text())["super_experts"]
    assert {(e["layer"], e["expert"]) for e in found} >= set(DEMO_SUPER_EXPERTS)
    resumed = _profile(demo_dir, tmp_path / "again", "--stream", "--state-dir", str(tmp_path / "state"), "--resume")
    assert resumed["expert_stats"] == in_memory["expert_stats"]


def test_stream_flag_errors(demo_dir, tmp_path, capsys):
    assert main(["profile", str(demo_dir), "--resume", "--out", str(tmp_path / "o")]) == 2
    assert "add --stream" in capsys.readouterr().err
    assert main(["profile", str(demo_dir), "--stream", "--resume", "--out", str(tmp_path / "o")]) == 2
    assert "--resume needs --state-dir" in capsys.readouterr().err
    assert not (tmp_path / "o" / "profile.json").exists()
