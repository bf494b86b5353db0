"""Fixtures of the report tests (helpers and the hand-built profile are in report_helpers.py)."""

from __future__ import annotations

import pytest
from report_helpers import make_profile, write_optional_files

from superexperts.rules import paper
from superexperts.runfolder import save_run


@pytest.fixture
def hand_profile():
    return make_profile()


@pytest.fixture
def hand_verdict(hand_profile):
    return paper(hand_profile.expert_stats, hand_profile.num_layers)


@pytest.fixture
def hand_run(tmp_path, hand_profile, hand_verdict):
    """A run folder as `profile` writes it (no report yet)."""
    out = tmp_path / "run"
    save_run(out, hand_profile, hand_verdict)
    return out


@pytest.fixture(scope="session")
def full_report(tmp_path_factory):
    """(run folder, report.html text) of a synthetic run with every optional file; rendered once."""
    from superexperts.report import write_report

    prof = make_profile(synthetic=True)
    run = tmp_path_factory.mktemp("full") / "run"
    save_run(run, prof, paper(prof.expert_stats, prof.num_layers))
    write_optional_files(run, prof)
    path = write_report(run)
    return run, path.read_text()
