"""Warnings from the library reach the CLI user as one plain line each (issue 14.12)."""

from __future__ import annotations

from catalogue_workspace import PROFILE_ARGS

from superexperts.cli import main


def test_capped_samples_warning_is_one_line(workspace, capfd):
    args = ["profile", "good", "--data", "data/good.txt", *PROFILE_ARGS, "--samples", "500", "--out", "r"]
    assert main(args) == 0
    err = capfd.readouterr().err
    said = [line for line in err.splitlines() if "--samples 500" in line]
    assert len(said) == 1 and said[0].startswith("superexperts profile: warning: --samples 500: the data holds only ")
    assert "SuperExpertsWarning" not in err and "warnings.warn" not in err
