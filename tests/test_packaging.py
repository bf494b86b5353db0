"""Building the package's metadata raises no setuptools deprecation (issue 14.12: license as SPDX)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_METADATA = """
import warnings
from setuptools import build_meta
warnings.simplefilter("error")  # any deprecation setuptools raises fails the build
print(build_meta.prepare_metadata_for_build_wheel("meta"))
"""


def test_metadata_builds_without_deprecations(tmp_path):
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (tmp_path / "meta").mkdir()
    done = subprocess.run([sys.executable, "-c", BUILD_METADATA], cwd=tmp_path, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    metadata = next((tmp_path / "meta").glob("*.dist-info/METADATA")).read_text()
    assert "License-Expression: Apache-2.0" in metadata
