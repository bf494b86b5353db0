"""A reader that stops early (`superexperts known | head -3`) ends the program quietly, exit 0 (issue 23)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.mark.slow  # a fresh interpreter imports torch and transformers: seconds per case
@pytest.mark.parametrize("argv", [["known"], ["known", "--json"], ["identify", "--from", "run"]], ids=" ".join)
def test_closed_stdout_ends_quietly(workspace, argv):
    env = {"PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(workspace.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "superexperts", *argv], cwd=workspace, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()  # the reader is gone before the first line: every print meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait() == 0, err
    assert err == "", err
