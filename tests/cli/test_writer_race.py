"""Two writers of one run folder cannot interleave (issue 23): while `profile --overwrite --out run` is
held inside its writer lock in another process, every command that would write into `run` (report,
identify, prune-eval --out run, protect profiling into it) gets one line, exit 2, and changes nothing,
also from a shell with another TMPDIR."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from catalogue_workspace import PROFILE_ARGS

from file_trees import tree_digest
from superexperts.cli import main

SRC = str(Path(__file__).resolve().parents[2] / "src")

# A real `profile --overwrite` that stops inside its lock (before computing) until the test says go.
HELD = """
import sys, time
from pathlib import Path
from superexperts.cli import main, profile

original = profile.run

def held(args):
    Path("held").write_text("")
    while not Path("go").exists():
        time.sleep(0.05)
    return original(args)

profile.run = held
sys.exit(main(sys.argv[1:]))
"""

SECOND = [
    ["report", "--from", "run"],
    ["identify", "--from", "run"],
    ["prune-eval", "good", "--from", "run", "--out", "run", "--overwrite", "--experts", "1:3", "--ppl",
     "data/good.txt", "--seq-len", "16", "--device", "cpu"],
    ["protect", "good", "--for", "json", "--profile-out", "run", "--overwrite"],
    ["profile", "good", "--out", "./run/../run", "--overwrite", *PROFILE_ARGS],  # the same real path
]


@pytest.mark.slow  # the first writer is a fresh interpreter (imports torch and transformers)
def test_a_second_writer_of_a_held_run_folder_gets_one_line(workspace, capfd, monkeypatch):
    env = {"PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(workspace.parent)}
    first = subprocess.Popen([sys.executable, "-c", HELD, "profile", "good", "--out", "run", "--overwrite",
                              *PROFILE_ARGS], cwd=workspace, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (workspace / "held").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read().decode()
            time.sleep(0.1)
        (workspace / "held").unlink()
        before = tree_digest(workspace)
        for tmpdir in (None, workspace.parent / "othertmp"):  # a shell with its own TMPDIR sees the lock too
            if tmpdir is not None:
                tmpdir.mkdir()
                monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
            for argv in SECOND:
                capfd.readouterr()
                assert main(argv) == 2, argv
                err = capfd.readouterr().err.strip()
                assert len(err.splitlines()) == 1, err
                assert "is being written by another superexperts process" in err and f"pid {first.pid}" in err, err
                assert tree_digest(workspace) == before, argv
    finally:
        (workspace / "go").write_text("")
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err.decode()
    assert main(["report", "--from", "run"]) == 0  # released: the next writer goes ahead
