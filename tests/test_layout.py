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


def test_no_import_cycles_between_modules():
    """Every import counts (deferred and TYPE_CHECKING ones too): no module reaches itself again."""
    import grimp

    graph = grimp.build_graph("superexperts")
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for nxt in sorted(imports[module]):
            if state.get(nxt) == 1:
                return [*path, module, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, module])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(imports):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, " -> ".join(cycle)
