"""A failure inside transformers' own code (a model that does not run with this transformers version) is one
line naming the file and the exception; a failure of ours keeps its traceback (issue 21: no family path ends
in a traceback)."""

from __future__ import annotations

import pytest
import transformers

from superexperts.cli import main
from superexperts.runs.errors import library_failure


def _raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the exception is what is under test
        return e
    raise AssertionError("expected an exception")


def test_an_exception_raised_inside_transformers_says_where():
    error = _raised(lambda: transformers.AutoConfig.for_model("no-such-model-type"))
    where = library_failure(error)
    assert where is not None and where.startswith("configuration_auto.py:") and "ValueError" in where


def test_an_exception_of_ours_is_not_blamed_on_transformers():
    assert library_failure(_raised(lambda: {}["key"])) is None


@pytest.mark.parametrize("verbose", [False, True])
def test_the_cli_prints_one_line_for_a_transformers_failure(monkeypatch, capsys, verbose):
    from superexperts.cli import known

    monkeypatch.setattr(known, "run", lambda args: transformers.AutoConfig.for_model("no-such-model-type"))
    assert main(["-v", "known"] if verbose else ["known"]) == 3
    err = capsys.readouterr().err
    if verbose:  # -v: the whole traceback, for a bug report
        assert "Traceback" in err
    else:
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert "fails in transformers" in err and "configuration_auto.py:" in err
