"""A reader that stops early (`superexperts known | head -3`) ends the program quietly, exit 0 (issue 23)."""

from __future__ import annotations

import os
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


def _stamps(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.mark.slow  # a fresh interpreter imports torch and transformers: seconds per case
@pytest.mark.parametrize("argv", [["identify", "--from", "run", "--criterion", "quantile"],
                                  ["compare", "run", "otherrun", "--out", "cmp2"]], ids=" ".join)  # fmt: skip
def test_a_reader_gone_leaves_every_file_untouched(workspace, argv):
    """Computed, printed, then written: with the reader gone before the first line, nothing is written."""
    from superexperts.cli import main

    assert main(["report", "--from", "run"]) == 0  # report.html and figures/: identify would re-render them
    before = _stamps(workspace)
    env = {"PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(workspace.parent)}
    reader, writer = os.pipe()
    os.close(reader)  # `| head -0`: the reader is gone before the command prints
    proc = subprocess.run([sys.executable, "-m", "superexperts", *argv], cwd=workspace, env=env, stdout=writer,
                          stderr=subprocess.PIPE, check=False)  # fmt: skip
    os.close(writer)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr.decode() == ""
    assert _stamps(workspace) == before  # same files, bytes and mtimes
    assert not (workspace / "cmp2").exists()
