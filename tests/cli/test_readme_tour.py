"""The README's guided tour runs as written, in order, after `make demo` (issue 22).

The commands are read from the README's table (not copied here) and run in a temporary folder that
sees the repository's `src/` (the tour is run from a checkout) and already holds a run folder in
runs/demo, as `make demo` leaves it. Only speed flags are appended (fewer windows, documents,
prompts); every command must succeed as written.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from superexperts.cli import main

ROOT = Path(__file__).resolve().parents[2]
# Appended to keep the test fast; each only shrinks what is measured (fewer seeds, windows, documents).
FAST = {
    "prune-eval": ["--random", "1", "--max-windows", "2", "--limit", "2", "--max-new-tokens", "4", "--causal", "1"],
    "sinks": ["--random", "1", "--samples", "1"],
    "quant-eval": ["--random", "1", "--max-windows", "2", "--samples", "2"],
}


def tour_commands() -> list[str]:
    """The backticked `superexperts ...` commands of the tour table's command column, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## A guided tour", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| \d+\. ", line)]
    return [cmd for row in rows for cmd in re.findall(r"`(superexperts [^`]+)`", row.split(" | ")[1])]


def test_the_tour_is_read_from_the_readme():
    commands = tour_commands()
    assert [c.split()[1] for c in commands] == ["profile", "prune-eval", "sinks", "quant-eval", "report", "profile",
                                                "compare"]  # fmt: skip


@pytest.mark.slow
def test_the_tour_runs_as_written_after_make_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").symlink_to(ROOT / "src")
    assert main(["profile", "--out", "runs/demo"]) == 0  # what `make demo` leaves (its first step)
    for command in tour_commands():
        argv = shlex.split(command)[1:]
        code = main([*argv, *FAST.get(argv[0], [])])
        assert code == 0, (command, capsys.readouterr().err[-2000:])
    assert "agree" in capsys.readouterr().out
    run = tmp_path / "runs" / "demo"
    for name in ("prune_eval.json", "sinks.json", "quant_eval.json", "report.html"):
        assert (run / name).is_file(), name
    assert json.loads((run / "prune_eval.json").read_text())["conditions"][0]["tasks"]["demo_arith"]
    assert "Stale:" not in (run / "report.html").read_text()
