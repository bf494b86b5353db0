"""`superexperts report RUN_DIR`: writes the page; a folder that is not a run is one line, exit 2."""

from __future__ import annotations

from superexperts import report
from superexperts.cli import main
from superexperts.report import sections


def test_report_command_writes_the_page(hand_run, capsys, monkeypatch):
    # Only light sections: this test is about the command's wiring; the page is tested elsewhere.
    monkeypatch.setattr(report, "SECTIONS", [sections.intro, sections.se_table])
    assert main(["report", str(hand_run), "--no-figure-files"]) == 0
    assert (hand_run / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert not (hand_run / "figures").exists()
    assert capsys.readouterr().out.strip() == f"wrote {hand_run / 'report.html'}"


def test_report_command_rejects_a_folder_without_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("superexperts report: error:") and "profile.json" in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []
