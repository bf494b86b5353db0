"""--out guards: an --out never destroys an input or a folder the command did not write (issue 14.1)."""

from __future__ import annotations

import pytest

from file_trees import tree_digest
from superexperts.models.checkpoints.export import RECORD
from superexperts.runs.errors import UserError
from superexperts.runs.safety import check_out_path


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """tmp/{src/(a file), mine/(a user's file), earlier/(an earlier export), empty/, notes.txt}."""
    monkeypatch.chdir(tmp_path)
    for name in ("src", "mine", "earlier", "empty"):
        (tmp_path / name).mkdir()
    (tmp_path / "src" / "w.bin").write_bytes(b"weights")
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    (tmp_path / "earlier" / RECORD).write_text("{}")
    (tmp_path / "notes.txt").write_text("keep")
    return tmp_path


@pytest.mark.parametrize(
    ("out", "overwrite", "message"),
    [
        (".", True, "is or contains the input"),  # the current folder holds src
        ("src", True, "is or contains the input"),
        ("src/sub", False, "is inside the input"),
        ("mine", False, "exists and is not empty; pass --overwrite"),
        ("mine", True, f"did not write \\(no {RECORD}\\)"),
        ("notes.txt", True, "is a file"),
    ],
)
def test_dangerous_out_is_refused(layout, out, overwrite, message):
    before = tree_digest(layout)
    with pytest.raises(UserError, match=message) as info:
        check_out_path(out, [layout / "src"], RECORD, overwrite=overwrite)
    assert "\n" not in str(info.value)
    assert tree_digest(layout) == before


def test_links_are_resolved(layout):
    (layout / "link").symlink_to(layout / "src")
    (layout / "dangling").symlink_to(layout / "gone")
    with pytest.raises(UserError, match="is or contains the input"):
        check_out_path("link", ["src"], RECORD, overwrite=True)
    with pytest.raises(UserError, match="is or contains the input"):  # the input given through a link
        check_out_path("src", ["link"], RECORD, overwrite=True)
    with pytest.raises(UserError, match="broken link"):
        check_out_path("dangling", ["src"], RECORD, overwrite=True)


def test_the_current_folder_is_never_an_out(layout, monkeypatch):
    monkeypatch.chdir(layout / "empty")  # empty, unrelated to the input: still not replaceable (we run inside it)
    with pytest.raises(UserError, match="current folder"):
        check_out_path(".", [layout / "src"], RECORD, overwrite=True)
    with pytest.raises(UserError, match="current folder"):
        check_out_path(layout, [], RECORD, overwrite=True)  # a parent of the current folder


def test_allowed_targets(layout):
    assert check_out_path("new/deeper", ["src"], RECORD, overwrite=False) == layout / "new" / "deeper"
    assert check_out_path("empty", ["src"], RECORD, overwrite=False) == layout / "empty"
    assert check_out_path("earlier", ["src"], RECORD, overwrite=True) == layout / "earlier"
    assert check_out_path("x", ["no-org/hub-id", None], RECORD, overwrite=False) == layout / "x"
