"""Fixtures of the CLI tests: the bad-input catalogue's workspace.

Built once per session; each catalogue case works in a hard-linked copy (cheap) and checks it is
unchanged afterwards, so a case that wrongly writes or deletes cannot affect the next one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from catalogue_workspace import build_workspace


@pytest.fixture(scope="session")
def catalogue_ws(tmp_path_factory) -> Path:
    """The read-only workspace (cases use a copy: see `workspace`)."""
    return build_workspace(tmp_path_factory.mktemp("catalogue") / "ws")


@pytest.fixture
def workspace(catalogue_ws, tmp_path, monkeypatch) -> Path:
    """A hard-linked copy of the catalogue workspace, as the current folder."""
    ws = shutil.copytree(catalogue_ws, tmp_path / "ws", symlinks=True, copy_function=os.link)
    monkeypatch.chdir(ws)
    return ws


@pytest.fixture
def readonly(workspace):
    """`workspace/ro` bind-mounted read-only (as root, chmod does not stop writes); skipped where
    mounting is not allowed."""
    ro = workspace / "ro"
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot make a read-only folder here (mount --bind -o ro: {done.stderr.decode().strip()})")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)
