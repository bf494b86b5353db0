"""`superexperts report --from RUN_DIR`: writes the page; a folder that is not a run is one line, exit 2."""

from __future__ import annotations

import pytest

from superexperts import report
from superexperts.cli import main
from superexperts.report import sections


def test_report_command_writes_the_page(hand_run, capsys, monkeypatch):
    # Only light sections: this test is about the command's wiring; the page is tested elsewhere.
    monkeypatch.setattr(report, "SECTIONS", [sections.intro, sections.se_table])
    assert main(["report", "--from", str(hand_run), "--no-figure-files"]) == 0
    assert (hand_run / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert not (hand_run / "figures").exists()
    assert capsys.readouterr().out.strip() == f"wrote {hand_run / 'report.html'}"


def test_report_command_rejects_a_folder_without_a_run(tmp_path, capsys):
    assert main(["report", "--from", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("superexperts report: error:") and "profile.json" in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_the_positional_run_folder_still_works_with_a_note(hand_run, capsys, monkeypatch):
    """RUN_DIR as a positional (the old spelling of report and identify) for one release: a one-line note."""
    monkeypatch.setattr(report, "SECTIONS", [sections.intro, sections.se_table])
    assert main(["report", str(hand_run), "--no-figure-files"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"wrote {hand_run / 'report.html'}"
    assert err == (f"superexperts: note: the positional RUN_DIR ({hand_run}) is deprecated, use --from {hand_run} "
                   "(the old spelling goes in the next release).\n")  # fmt: skip
    assert main(["report", str(hand_run), "--from", str(hand_run.parent)]) == 2
    assert "two run folders given" in capsys.readouterr().err


def test_help_shows_only_the_from_spelling(capsys):
    for command in ("report", "identify"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        shown = capsys.readouterr().out
        assert "--from RUN_DIR" in shown and "positional arguments" not in shown and "[RUN_DIR]" not in shown
