"""The CLI answers --help, --version and argument errors before torch, transformers or pandas load,
and its exit codes say what happened (0 ok, 1 a negative verdict, 2 bad input, 3 a failure)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from superexperts.cli import COMMANDS, main

HEAVY = ("torch", "transformers", "pandas", "matplotlib")


def _imported_after(argv: list[str]) -> tuple[int, list[str], str]:
    """(exit code, heavy modules imported, stderr) of `superexperts ARGV` in a fresh interpreter."""
    code = ("import json, sys\nfrom superexperts.cli import main\ntry:\n    rc = main(sys.argv[1:])\n"
            "except SystemExit as e:\n    rc = e.code\n"
            f"print(json.dumps([rc, [m for m in {HEAVY!r} if m in sys.modules]]), file=sys.stderr)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, *argv], check=False, capture_output=True, text=True,
                          timeout=120)
    rc, heavy = json.loads(done.stderr.strip().splitlines()[-1])
    return rc, heavy, done.stderr


@pytest.mark.parametrize("argv", [["--help"], ["--version"], *[[c, "--help"] for c in COMMANDS]])
def test_help_imports_nothing_heavy(argv):
    rc, heavy, _ = _imported_after(argv)
    assert rc == 0 and heavy == []


def test_a_bad_flag_is_refused_before_torch_loads():
    rc, heavy, err = _imported_after(["prune-eval", "--no-such-flag"])
    assert rc == 2 and heavy == [] and "--no-such-flag" in err


def test_version(capsys):
    from superexperts.runs.version import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"superexperts {__version__}"


def test_every_criterion_is_listed_in_the_help():
    from superexperts.cli.common import CRITERION_NAMES
    from superexperts.identify.rules import CRITERIA

    assert sorted(CRITERION_NAMES) == sorted(CRITERIA)


def test_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "1 a negative verdict" in capsys.readouterr().out


def test_quiet_prints_nothing_and_keeps_the_exit_code(tmp_path, capsys):
    run = tmp_path / "run"
    (run).mkdir()
    (run / "mine.txt").write_text("x")
    assert main(["-q", "report", "--from", str(run)]) == 2  # bad input: still one line on stderr
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "profile.json" in err


def test_an_unexpected_failure_exits_3_not_1(monkeypatch, capsys, tmp_path):
    import superexperts.cli.report as report_cli

    def broken(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(report_cli, "run", broken)
    assert main(["report", "--from", str(tmp_path)]) == 3
    assert "boom" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "old", "new", "dest", "value"), [
    ("sinks", "--prune", "--experts", "prune", "1:13"),
    ("export", "--prune", "--experts", "prune", "1:13"),
    ("prune-eval", "--criterion", "--prune-by", "criterion", "reap"),
    ("protect", "--run-dir", "--profile-out", "run_dir", "somewhere"),
    ("plan", "--device", "--hardware", "hardware", "h100-80gb"),
])  # fmt: skip
def test_old_spellings_are_hidden_aliases_with_a_note(capsys, command, old, new, dest, value):
    from superexperts.cli import build_parser

    required = {"export": ["MODEL", "--out", "o"], "protect": ["--for", "json"], "plan": ["MODEL"]}.get(command, [])
    argv = [command, *required]
    parser = build_parser([*argv, new, value])
    assert getattr(parser.parse_args([*argv, old, value]), dest) == value
    assert f"{old} is deprecated, use {new}" in capsys.readouterr().err
    assert getattr(parser.parse_args([*argv, new, value]), dest) == value
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    shown = capsys.readouterr().out
    listed = [line.split()[0] for line in shown.splitlines() if line.startswith("  -")]  # the option column
    assert new in listed and old not in listed and f"[{old} " not in shown
