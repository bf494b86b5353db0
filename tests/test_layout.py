"""The house: wings in layers (import-linter contracts in pyproject.toml), a short top level, and the
documented import paths that moved still import."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import superexperts

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "superexperts"


def test_import_contracts_are_kept():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a dev dependency: pip install -e '.[dev]'"
    done = subprocess.run([lint], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_top_level_has_at_most_twelve_entries():
    entries = sorted(p.name for p in PACKAGE.iterdir()
                     if p.name not in {"__init__.py", "__main__.py", "__pycache__"})  # fmt: skip
    assert len(entries) <= 12, entries


def test_every_wing_says_what_it_owns_and_may_import():
    for wing in PACKAGE.iterdir():
        if wing.is_dir() and (wing / "__init__.py").is_file():
            doc = importlib.import_module(f"superexperts.{wing.name}").__doc__ or ""
            assert len(doc.split()) >= 15, f"{wing.name}/__init__.py needs a docstring saying what it owns"


@pytest.mark.parametrize(("old", "new"), sorted(superexperts.ALIASES.items()))
def test_moved_import_paths_are_the_same_modules(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)


def test_readme_api_paths():
    from superexperts.data import calibration
    from superexperts.loading import load_model
    from superexperts.profile import Profile

    assert callable(superexperts.profile) and superexperts.profile.__name__ == "profile"
    assert load_model.__module__ == "superexperts.models.loading"
    assert calibration.__module__ == "superexperts.capture.data"
    assert Profile is superexperts.Profile
