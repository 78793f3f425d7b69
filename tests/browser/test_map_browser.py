"""Chromium on the Map of a 200,000-document workspace: the density layer of every document,
and the UMAP layout arriving by itself (no click) while the page polls its background job.

The workspace is fitted here from planted synthetic data at small dimension (d = 16, K = 8,
ten MM iterations: about ten seconds); UMAP runs on a 1,000-document sample
(``GEM_APP_UMAP_SAMPLE``) and places the other 199,000 by their nearest sample neighbours.
Screenshots: ``map_density_200k.png`` (the instant layout) and ``map_umap_200k.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.browser.server import running_app
from tests.browser.ui import BROWSER_MARKS, wait_until
from tests.synthetic_workspace import synthetic_fit

pytestmark = BROWSER_MARKS
pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
GEM = Path(sys.executable).parent / "gem"
N_DOCUMENTS = 200_000


@pytest.fixture(scope="module")
def big_map_server(tmp_path_factory):
    """``gem app`` on the 200k workspace with the UMAP layout on (small sample)."""
    root = tmp_path_factory.mktemp("browser_map_200k")
    workspace = synthetic_fit(root, N_DOCUMENTS, k=8, d=16)
    with running_app(GEM, workspace, umap_sample=1000) as (url, _):
        yield url, root


def _caption(page) -> str:
    """The map's caption (all copies: a rerun keeps the stale one until it is replaced)."""
    captions = page.locator("[data-testid='stCaptionContainer']", has_text="density layer")
    return " | ".join(captions.all_inner_texts())


def test_map_of_200k_documents_shows_every_document_and_umap_arrives_by_itself(
    big_map_server, browser, out_dir
):
    url, log = big_map_server
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(f"{url}/map")
    page.get_by_role("heading", name="Map of the hypersphere").first.wait_for(timeout=180_000)
    page.get_by_text("all 200,000 in the density layer").first.wait_for(timeout=180_000)
    assert "Showing 30,000 of 200,000 documents as points" in _caption(page)
    page.get_by_role("radio", name="Map 2D", exact=True).click()
    # the density layer: plotly draws the layout image below the points
    image = page.locator(".js-plotly-plot image")  # layout images: svg <image> elements
    image.first.wait_for(state="attached", timeout=120_000)
    assert image.first.get_attribute("href").startswith("data:image/png;base64,")
    if "spherical projection" in _caption(page):  # UMAP still running: its progress shows
        assert page.get_by_text("UMAP layout in the background").count() >= 1
    page.screenshot(path=str(out_dir / "map_density_200k.png"), full_page=True)
    # no click from here: the polling fragment reruns the page once the layout is stored
    wait_until(
        lambda: "layout: UMAP" in _caption(page),
        timeout=240,
        what=f"the UMAP layout to replace the instant one (server log in {log})",
    )
    image.first.wait_for(state="attached", timeout=60_000)
    assert page.get_by_text("UMAP layout in the background").count() == 0
    assert page.locator("[data-testid='stException']").count() == 0
    page.wait_for_timeout(1500)  # let WebGL draw the points before the picture
    page.screenshot(path=str(out_dir / "map_umap_200k.png"), full_page=True)
    page.close()
