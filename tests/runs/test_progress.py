"""A progress bar erases itself when its loop fails, so the error is the only line left on screen."""

from __future__ import annotations

import pytest

from superexperts.runs.progress import progress_bar


def _shown(stream: str) -> list[str]:
    return [shown for line in stream.split("\n") if (shown := line.rpartition("\r")[2].strip())]


def test_failed_loop_leaves_no_bar(capsys):
    seen = []
    with pytest.raises(KeyError), progress_bar(range(5), desc="layers") as items:
        for i in items:
            seen.append(i)
            if i == 2:
                raise KeyError
    assert seen == [0, 1, 2]
    assert _shown(capsys.readouterr().err) == []


def test_finished_loop_keeps_its_bar(capsys):
    with progress_bar(range(3), desc="layers") as items:
        assert list(items) == [0, 1, 2]
    shown = _shown(capsys.readouterr().err)
    assert len(shown) == 1 and shown[0].startswith("layers: 100%") and "3/3" in shown[0]
