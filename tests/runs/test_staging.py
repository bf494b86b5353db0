"""Staging folders of killed runs are swept at the next run; only ours, only when the owner is gone (issue 14.9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from superexperts.runs.runfolder import write_files
from superexperts.runs.staging import owner_gone, sweep_stale

SRC = str(Path(__file__).resolve().parents[2] / "src")

# A child that starts writing a run folder, says so, then hangs inside the write until killed.
CHILD = """
import sys, time
from superexperts.runs.runfolder import write_files

def hang(path):
    path.write_bytes(b"partial")
    print("writing", flush=True)
    time.sleep(600)

write_files(sys.argv[1], {"a.json": b"{}", "b.bin": hang})
"""


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _killed_mid_write(out: Path) -> None:
    env = dict(os.environ, PYTHONPATH=SRC)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL")
def test_sigkill_leftover_is_swept_by_the_next_run(tmp_path):
    out = tmp_path / "run"
    _killed_mid_write(out)
    left = [p.name for p in out.iterdir()]
    assert len(left) == 1 and left[0].startswith(".staging-")  # what SIGKILL leaves: the bug's precondition
    write_files(out, {"a.json": b"{}"})
    assert sorted(p.name for p in out.iterdir()) == ["a.json"]


def test_only_our_prefix_and_gone_owners_are_swept(tmp_path):
    dead, alive = _dead_pid(), os.getppid()  # our parent runs and started before these folders
    names = [f".staging-{dead}-abc", f".staging-{alive}-abc", f".staging-{os.getpid()}-abc",
             ".staging-abc12345", f"staging-{dead}-abc", f".stagingx{dead}-abc", f".staging-{dead}x"]  # fmt: skip
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
    assert sweep_stale(tmp_path, ".staging-") == [tmp_path / f".staging-{dead}-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from /proc")
def test_a_reused_pid_does_not_keep_a_stale_folder():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert owner_gone(child.pid, since=time.time() - 3600)  # the folder predates this process: stale
        assert not owner_gone(child.pid, since=time.time() + 3600)
    finally:
        child.kill()
        child.wait()
