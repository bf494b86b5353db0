"""Two writers of one folder exclude each other; a dead writer's lock is swept (issue 23)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from superexperts.runs.errors import UserError
from superexperts.runs.staging import lock_dir, writer_lock


def _lock_file_of(target) -> os.PathLike:
    """The lock file `writer_lock(target)` creates, found by taking and looking (no re-derived name)."""
    before = set(lock_dir().glob("*.lock")) if lock_dir().exists() else set()
    with writer_lock(target):
        (path,) = set(lock_dir().glob("*.lock")) - before
    return path


def test_a_second_writer_is_refused_and_the_lock_released(tmp_path):
    with writer_lock(tmp_path / "run"):
        refused = pytest.raises(UserError, match=f"being written by another superexperts process \\(pid {os.getpid()}\\)")
        with refused, writer_lock(tmp_path / "run"):
            pass
        with writer_lock(tmp_path / "other"):  # another folder is not locked
            pass
    with writer_lock(tmp_path / "run"):  # released on exit
        pass


def test_the_same_folder_through_a_link_is_the_same_lock(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "alias").symlink_to("run")
    with writer_lock(tmp_path / "run"), pytest.raises(UserError, match="being written"), writer_lock(tmp_path / "alias"):
        pass


def test_a_live_owner_keeps_its_lock_a_dead_one_loses_it(tmp_path):
    path = _lock_file_of(tmp_path / "run")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(1.2)  # the lock is younger than its owner, as when the owner took it
        path.write_text(f"{live.pid} x\n")
        with pytest.raises(UserError, match=f"pid {live.pid}"), writer_lock(tmp_path / "run"):
            pass
    finally:
        live.kill()
        live.wait()
    with writer_lock(tmp_path / "run"):  # its owner is gone: swept and taken
        assert path.read_text().split()[0] == str(os.getpid())
    assert not path.exists()


def test_cli_second_writer_gets_one_line(tmp_path, monkeypatch, capfd):
    from superexperts.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    with writer_lock(tmp_path / "run"):
        code = main(["report", "--from", "run"])
    err = capfd.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [(f"superexperts report: error: --from run is being written by another "
                                        f"superexperts process (pid {os.getpid()}); wait for it to finish or "
                                        "choose another path.")]  # fmt: skip
