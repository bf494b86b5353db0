"""Issue 14 items 3/8: what an interruption says, and the --allow-missing-weights opt-in."""

from __future__ import annotations

import argparse

from catalogue_workspace import PROFILE_ARGS

from superexperts.cli import _interrupted, main
from superexperts.runs.runfolder import WRITTEN, atomic_write


def test_interruption_after_run_files_does_not_say_nothing_was_written(tmp_path):
    WRITTEN.clear()
    assert _interrupted(argparse.Namespace()) == "nothing was written."
    atomic_write(tmp_path / "run" / "profile.json", "{}")  # the run is written, the report is not yet
    said = _interrupted(argparse.Namespace())
    assert "nothing was written" not in said and str(tmp_path / "run") in said
    WRITTEN.clear()


def test_stream_interruption_says_how_to_resume():
    said = _interrupted(argparse.Namespace(stream=True, state_dir="state"))
    assert "--resume" in said and "state" in said


def test_allow_missing_weights_opts_in(workspace, capfd):
    """The refused checkpoint (an attention weight missing) runs when the user opts in, with a warning."""
    assert main(["profile", "missingattn", "--out", "opted", "--allow-missing-weights", *PROFILE_ARGS]) == 0
    assert (workspace / "opted" / "profile.json").is_file()
    assert "q_proj" in capfd.readouterr().err


def test_ctrl_c_while_the_subcommands_import_is_one_line(monkeypatch, capsys):
    """Issue 14 item 6: Ctrl-C during the (slow) imports of the subcommands gives one line, no traceback."""
    from superexperts import cli

    def interrupted(*argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["profile"]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "superexperts: interrupted while starting; nothing was written."
