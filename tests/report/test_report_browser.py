"""The report in a real headless browser (Debian's chromium): a screenshot that shows a page, and
the rendered DOM holding the Super Expert table. Skipped where chromium is not installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest

from report_helpers import HOSTILE, PLANTED, parse_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI sets SUPEREXPERTS_REQUIRE_BROWSER=1 (and installs chromium): there a missing browser is a failure.
if CHROMIUM is None and os.environ.get("SUPEREXPERTS_REQUIRE_BROWSER") == "1":
    raise RuntimeError("SUPEREXPERTS_REQUIRE_BROWSER=1 but no chromium on PATH; apt-get install chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               f"--user-data-dir={tmp_path / 'profile'}", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True)


def test_screenshot_shows_a_page(full_report, tmp_path):
    run, _ = full_report
    shot = tmp_path / "report.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", (run / "report.html").as_uri())
    pixels = matplotlib.image.imread(shot)[..., :3]  # (height, width, rgb) in [0, 1]
    assert pixels.shape[:2] == (2000, 1280)
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # text, tables and the banner, not one flat colour
    ink = (pixels.min(axis=2) < 0.5).mean()  # dark pixels: rendered text
    assert 0.005 < ink < 0.5


def test_rendered_dom_holds_the_se_table(full_report, tmp_path):
    run, _ = full_report
    dom = _chromium(tmp_path, "--dump-dom", (run / "report.html").as_uri()).stdout
    parsed = parse_page(dom)
    rows = parsed.tables["super-experts"][1:]
    planted = sorted(PLANTED.items(), key=lambda item: -item[1])
    assert [(int(r[0]), r[1]) for r in rows] == [(layer, str(e) if kind == "routed" else kind)
                                                 for (layer, kind, e), _ in planted]  # fmt: skip
    assert all(r[5] == json.dumps(HOSTILE) for r in rows)  # shown as text by the browser
    assert not [tag for tag, _ in parsed.tags if tag == "script"]  # hostile text never became an element
