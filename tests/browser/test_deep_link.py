"""A first visit to a deep URL on a freshly started server goes through the app's navigation.

Streamlit serves a folder named pages/ that sits beside the entry script as an old-style
multipage app: /mix would then run pages/mix.py alone (a navigation listing every file, no
sidebar, no error handling). The entry is pages/streamlit_app.py, so this must not happen.
"""

from __future__ import annotations

import math

import pytest

from gem_app.app import state as app_state
from tests.browser.ui import (
    BROWSER_MARKS,
    NAV,
    metric_value,
    nav_links,
    settle,
    tau_value,
    wait_until,
)

pytestmark = BROWSER_MARKS
pytest.importorskip("playwright.sync_api", reason="needs the playwright package")


def test_first_visit_to_mix_shows_the_navigation_and_the_page(app_server, browser, out_dir):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{app_server}/mix")  # the server's very first request for a page
    settle(page, "Mix & Export")  # the sample is fitted first (no fit in the fresh workspace)
    page.screenshot(path=str(out_dir / "deep_link_mix.png"), full_page=True)
    assert page.url == f"{app_server}/mix"
    # the entry script ran: its navigation (titles, not file names) and its sidebar
    assert nav_links(page) == NAV
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


@pytest.mark.parametrize(
    ("slug", "title", "nav"),
    [
        ("map", "Map of the hypersphere", "Map"),
        ("evaluate", "Evaluate mixtures", "Evaluate"),
        ("mix", "Mix & Export", "Mix & Export"),
    ],
)
def test_a_shared_link_opens_its_page(app_server, browser, out_dir, slug, title, nav):
    # a new browser tab on the page's own URL (Map was the default page, served only at "/":
    # /map opened a "Page not found" dialog)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{app_server}/{slug}")
    settle(page, title)
    page.screenshot(path=str(out_dir / f"deep_link_{slug}.png"), full_page=True)
    assert page.url == f"{app_server}/{slug}"
    assert page.get_by_text("Page not found").count() == 0
    active = page.get_by_test_id("stSidebarNav").locator("a[aria-current='page']")
    assert active.inner_text().strip().splitlines()[-1] == nav
    # a curator's toolbar: no "Deploy" button (gem app starts Streamlit as a viewer)
    assert page.get_by_test_id("stAppDeployButton").count() == 0
    assert page.get_by_role("button", name="Deploy").count() == 0
    page.close()


def test_the_root_url_opens_the_map_at_its_own_url(app_server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(app_server)
    settle(page, "Map of the hypersphere")
    wait_until(lambda: page.url == f"{app_server}/map", what="the URL to become /map")
    assert page.get_by_text("Page not found").count() == 0
    assert nav_links(page) == NAV
    page.close()
