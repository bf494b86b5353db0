"""Run-folder writes: a full disk is one line and leaves nothing; files get the usual permissions."""

from __future__ import annotations

import errno
import os

import pytest

from file_trees import tree_digest
from superexperts.runs.errors import UserError
from superexperts.runs.runfolder import atomic_write_json, write_files


def _full_disk(path):
    path.write_bytes(b"half")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_in_a_new_folder_leaves_nothing(tmp_path):
    with pytest.raises(UserError, match="disk is full.*nothing was written") as info:
        write_files(tmp_path / "runs" / "new", {"a.json": b"{}", "table.parquet": _full_disk})
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # not even the folders it made


def test_disk_full_in_an_existing_run_changes_nothing(tmp_path):
    (tmp_path / "a.json").write_text("old")
    before = tree_digest(tmp_path)
    with pytest.raises(UserError, match="disk is full"):
        write_files(tmp_path, {"a.json": b"new", "b.parquet": _full_disk})
    assert tree_digest(tmp_path) == before


def test_files_have_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    atomic_write_json(tmp_path / "atomic.json", {"a": 1})  # mkstemp makes 0600
    write_files(tmp_path / "run", {"a.json": b"{}", "b.txt": lambda p: p.write_text("x")})
    for path in [tmp_path / "atomic.json", *(tmp_path / "run").iterdir()]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path.name
