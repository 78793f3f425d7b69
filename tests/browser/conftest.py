"""Chromium (Debian's /usr/bin/chromium through Playwright) and a `gem app` server per module.

Every test module gets its own server on its own fresh workspace (``app_server``), so no
module sees another's fits, taxonomy edits or saved mixtures. Screenshots go to
``$GEM_TEST_OUTPUT/screenshots`` (or the test's tmp_path), never into the repository.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.browser.server import running_app
from tests.browser.ui import CHROMIUM, CHROMIUM_FLAGS

GEM = Path(sys.executable).parent / "gem"


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, request):
    """``gem app`` on a fresh workspace of this module; its URL."""
    root = tmp_path_factory.mktemp(f"browser_{request.module.__name__.rsplit('.', 1)[-1]}")
    with running_app(GEM, root / "workspace") as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def out_dir(tmp_path):
    folder = Path(os.environ.get("GEM_TEST_OUTPUT") or tmp_path) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
