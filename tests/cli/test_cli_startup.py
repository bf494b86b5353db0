"""The CLI answers --help, --version and argument errors before torch, transformers or pandas load,
and its exit codes say what happened (0 ok, 1 a negative verdict, 2 bad input, 3 a failure)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from superexperts.cli import COMMANDS, main

HEAVY = ("torch", "transformers", "pandas", "matplotlib")


def _imported_after(argv: list[str], cwd=None) -> tuple[int, list[str], str]:
    """(exit code, heavy modules imported, stderr) of `superexperts ARGV` in a fresh interpreter (in `cwd`)."""
    code = ("import json, sys\nfrom superexperts.cli import main\ntry:\n    rc = main(sys.argv[1:])\n"
            "except SystemExit as e:\n    rc = e.code\n"
            f"print(json.dumps([rc, [m for m in {HEAVY!r} if m in sys.modules]]), file=sys.stderr)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, *argv], check=False, capture_output=True, text=True,
                          timeout=120, cwd=cwd)  # fmt: skip
    rc, heavy = json.loads(done.stderr.strip().splitlines()[-1])
    return rc, heavy, done.stderr


@pytest.mark.parametrize("argv", [["--help"], ["--version"], *[[c, "--help"] for c in COMMANDS]])
def test_help_imports_nothing_heavy(argv):
    rc, heavy, _ = _imported_after(argv)
    assert rc == 0 and heavy == []


def test_a_bad_flag_is_refused_before_torch_loads():
    rc, heavy, err = _imported_after(["prune-eval", "--no-such-flag"])
    assert rc == 2 and heavy == [] and "--no-such-flag" in err


# Issue 22: every input check that needs no model weights answers before torch, transformers, pandas
# or matplotlib load (under 1 s). Realistic refusals per subcommand, in the bad-input catalogue's
# workspace (tests/cli/catalogue_workspace.py): a checkpoint `good` (config.json read with json), runs
# `run` (of good) and `otherrun` (of another family), a user's folder `mine`, data files.
REFUSALS = [
    (["profile", "good", "--out", "run"], "--overwrite"),
    (["profile", "--out", "run"], "--overwrite"),  # the built-in demo
    (["profile", "good", "--out", "good", "--overwrite"], "is or contains the input good"),
    (["profile", "good", "--data", "data/missing.txt", "--out", "new"], "no such file"),
    (["profile", "good", "--data", "data/binary.txt", "--out", "new"], "not a text file"),
    (["profile", "good", "--include-layers", "1,99", "--out", "new"], "[99] out of range"),  # layers of config.json
    (["profile", "good", "--param", "percentile=200", "--out", "new"], "percentile=200.0 is out of range"),
    (["profile", "good", "--device", "banana", "--out", "new"], "not a device"),
    (["profile", "good", "--resume", "--out", "new"], "--stream"),
    (["identify", "--from", "nothere"], "not found"),
    (["identify", "--from", "run", "--include-layers", "1,99"], "[99] out of range"),  # layers of profile.json
    (["identify", "--from", "run", "--param", "k=1"], "no parameter 'k'"),
    (["report", "--from", "mine"], "no profile.json"),
    (["report", "--from", "nothere"], "not a folder"),
    (["compare", "run", "run"], "twice"),
    (["compare", "run", "otherrun", "--out", "cmp"], "--overwrite"),
    (["export", "good", "--experts", "1:3", "--out", "mine"], "--overwrite"),
    (["export", "good", "--experts", "1:99", "--out", "pruned"], "out of range"),
    (["export", "good", "--experts", "super", "--from", "otherrun", "--out", "pruned"], "otherrun was profiled on"),
    (["export", "good", "--experts", "super", "--from", "nothere", "--out", "pruned"], "nothere"),
    (["protect", "--from", "run", "--for", "banana"], "banana"),
    (["protect", "--from", "run", "--for", "json", "--out-file", "run/profile.json", "--overwrite"], "own profile.json"),
    (["protect", "--from", "otherrun", "--for", "json", "--checkpoint", "good"], "otherrun was profiled on"),
    (["protect", "--from", "nothere", "--for", "json"], "no profile run there"),
    (["audit", "good", "good2", "--out", "good"], "is or contains the input good"),
    (["audit", "good", "good2", "--from", "nothere"], "nothere"),
    (["audit", "good", "good2", "--from", "otherrun", "--out", "au"], "otherrun was profiled on"),
    (["audit", "good", "good2", "--threshold", "2"], "--threshold"),
    (["prune-eval", "good", "--from", "nothere"], "nothere"),
    (["prune-eval", "--from", "sinksrun", "--ppl", "data/good.txt"], "--overwrite"),  # it holds prune_eval.json
    (["prune-eval", "good", "--from", "otherrun", "--ppl", "data/good.txt", "--out", "pe"], "otherrun was profiled on"),
    (["prune-eval", "good", "--experts", "1:99", "--ppl", "data/good.txt"], "out of range"),  # config.json
    (["prune-eval", "good", "--experts", "1:3", "--mode", "banana", "--ppl", "data/good.txt"], "'banana'"),
    (["prune-eval", "good", "--experts", "1:3", "--ppl", "data/missing.txt"], "no such file"),
    (["sinks", "--from", "sinksrun"], "--overwrite"),
    (["sinks", "good", "--from", "nothere"], "nothere"),
    (["sinks", "good", "--from", "otherrun", "--out", "sk"], "otherrun was profiled on"),
    (["sinks", "good", "--experts", "1:3", "--layers", "1,99"], "[99] out of range"),  # layers of config.json
    (["quant-eval", "good", "--from", "run", "--bits", "5"], "--bits 5"),
    (["quant-eval", "good", "--from", "nothere"], "nothere"),
    (["quant-eval", "good", "--from", "otherrun", "--out", "qe"], "otherrun was profiled on"),
    (["quant-eval", "good", "--from", "run", "--out", "good"], "is or contains the input good"),
    (["quant-eval", "good", "--from", "run", "--ppl", "data/binary.txt", "--out", "qe"], "not a text file"),
    (["plan", "good", "--disk", "0"], "--disk"),
    (["plan", "good", "--commands", "foo"], "'foo'"),
    (["known", "nosuchmodel"], "no published Super Experts"),
]
@pytest.mark.parametrize(("argv", "message"), REFUSALS, ids=lambda v: " ".join(v)[:70] if isinstance(v, list) else None)
def test_a_refusal_needs_no_heavy_import(workspace, argv, message):
    from file_trees import tree_digest

    before = tree_digest(workspace)
    rc, heavy, err = _imported_after(argv, cwd=workspace)
    shown = [line for line in err.strip().splitlines()[:-1] if line.strip()]  # the last line is the probe's
    assert rc == 2, err
    assert len(shown) == 1 and shown[0].startswith(f"superexperts {argv[0]}: error: ") and message in shown[0], err
    assert heavy == [], f"imported {heavy} before refusing"
    assert tree_digest(workspace) == before, "created, changed or deleted files"


DEMO_REFUSALS = [
    (["prune-eval", "--experts", "1:99"], "expert 1:99 is out of range"),
    (["prune-eval", "--atoms", "1:13:99"], "atom 1:13:99 is out of range"),
    (["sinks", "--experts", "1:99"], "expert 1:99 is out of range"),
    (["sinks", "--experts", "1:3", "--layers", "1,99"], "[99] out of range"),
    (["profile", "--include-layers", "1,99"], "[99] out of range"),
]


@pytest.mark.parametrize(("argv", "message"), DEMO_REFUSALS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_demo_refusal_needs_no_heavy_import_once_its_copy_exists(tmp_path, argv, message):
    """The built-in demo's checks read its saved copy's config.json (built by the first demo command)."""
    from superexperts.models.demo import demo_checkpoint

    demo_checkpoint()
    rc, heavy, err = _imported_after([*argv, "--out", "out"], cwd=tmp_path)
    assert rc == 2 and message in err, err
    assert heavy == [], f"imported {heavy} before refusing"
    assert list(tmp_path.iterdir()) == []


def test_version(capsys):
    from superexperts.runs.version import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"superexperts {__version__}"


def test_every_criterion_is_listed_in_the_help():
    from superexperts.cli.common import CRITERION_NAMES
    from superexperts.identify.rules import CRITERIA

    assert sorted(CRITERION_NAMES) == sorted(CRITERIA)


def test_every_ablation_mode_names_its_module():
    """--mode is checked by name before torch loads; applying a mode imports the module of that name."""
    import importlib

    from superexperts.evaluate.ablate.ablation import MODES

    for mode in MODES:
        assert callable(getattr(importlib.import_module(f"superexperts.evaluate.ablate.{mode}"), f"apply_{mode}"))


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
