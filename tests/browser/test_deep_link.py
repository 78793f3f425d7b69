"""A first visit to a deep URL on a freshly started server goes through the app's navigation.

Streamlit serves a folder named pages/ that sits beside the entry script as an old-style
multipage app: /mix would then run pages/mix.py alone (a navigation listing every file, no
sidebar, no error handling). The entry is pages/streamlit_app.py, so this must not happen.
"""

from __future__ import annotations

import math

import pytest

from gem_app.app import state as app_state
from tests.browser.ui import CHROMIUM, metric_value, nav_links, settle, tau_value

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's Chromium at /usr/bin/chromium (apt install chromium)",
    ),
]
pytest.importorskip("playwright.sync_api", reason="needs the playwright package")


def test_first_visit_to_mix_shows_the_navigation_and_the_page(app_server, browser, out_dir):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{app_server}/mix")  # the server's very first request for a page
    settle(page, "Mix & Export")  # the sample is fitted first (no fit in the fresh workspace)
    page.screenshot(path=str(out_dir / "deep_link_mix.png"), full_page=True)
    assert page.url == f"{app_server}/mix"
    # the entry script ran: its navigation (titles, not file names) and its sidebar
    assert nav_links(page) == [
        "Data",
        "Fit",
        "Map",
        "Taxonomy",
        "Compare",
        "Evaluate",
        "Mix & Export",
    ]
    sidebar = page.get_by_test_id("stSidebar")
    fit = sidebar.locator("[data-testid='stSelectbox']", has_text="Fit")
    assert fit.locator("input").input_value() == app_state.SAMPLE_FIT
    assert "Workspace:" in sidebar.inner_text()
    active = page.get_by_test_id("stSidebarNav").locator("a[aria-current='page']")
    assert active.inner_text().strip().splitlines()[-1] == "Mix & Export"
    # the page itself: 16 cluster domains, tau = 1 (natural shares), its metrics
    assert page.get_by_text("16 domains (clusters)").count() == 1
    assert tau_value(page) == "1.00"
    assert float(metric_value(page, "KL(w ‖ natural)").split()[0]) == 0.0
    entropy = float(metric_value(page, "Entropy").split()[0])
    effective = float(metric_value(page, "Effective domains"))
    assert effective == pytest.approx(math.exp(entropy), abs=0.02)
    assert 1.0 < effective <= 16.0
    page.close()
