"""A real browser (Playwright + Debian's Chromium) walks the app started by ``gem app``.

Screenshots of every page go to ``$GEM_TEST_OUTPUT/screenshots`` (or the test's tmp_path).
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from tests.browser.ui import (
    BROWSER_MARKS,
    NAV,
    entropy,
    move_tau,
    nav_links,
    settle,
    tau_value,
    wait_until,
)

pytestmark = BROWSER_MARKS
pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
SCHEMA = Path(__file__).resolve().parents[2] / "gem_app" / "export" / "mixture.schema.json"
PAGES = [
    ("data", "Data"),
    ("fit", "Fit"),
    ("map", "Map of the hypersphere"),
    ("taxonomy", "Taxonomy"),
    ("compare", "Compare with the human taxonomy"),
    ("evaluate", "Evaluate mixtures"),
    ("mix", "Mix & Export"),
]


def test_walk_every_page_move_tau_and_download(app_server, browser, out_dir, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(app_server)  # the Map is the default page
    settle(page, "Map of the hypersphere")  # first launch: the sample is fitted, no click
    assert nav_links(page) == NAV
    for (slug, title), label in zip(PAGES, NAV, strict=True):
        page.get_by_test_id("stSidebarNav").get_by_role("link", name=label, exact=True).click()
        settle(page, title)
        assert page.url == f"{app_server}/{slug}"  # every page at its own URL, the Map too
        assert page.get_by_text("Page not found").count() == 0
        page.screenshot(path=str(out_dir / f"{slug}.png"), full_page=True)
    labels = page.locator("[data-testid='stMetricLabel']").all_inner_texts()
    assert [text.strip() for text in labels] == [
        "Entropy H(w)",
        "Effective domains exp H",
        "KL(w ‖ natural)",
        "Largest weight",
    ]
    before = entropy(page)
    move_tau(page, 20)  # 20 steps of 0.05: tau 1.0 -> 2.0
    wait_until(lambda: tau_value(page) == "2.00", what="tau to read 2.00")
    wait_until(lambda: entropy(page) != before, what="the entropy to update")
    settle(page, "Mix & Export")
    assert entropy(page) > before
    page.screenshot(path=str(out_dir / "mix_tau2.png"), full_page=True)
    with page.expect_download() as info:
        page.get_by_role("button", name="gem", exact=True).click()
    target = tmp_path / "mixture.json"
    info.value.save_as(target)
    doc = json.loads(target.read_text())
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    assert doc["mixing"]["tau"] == pytest.approx(2.0)
    # the Map colours by the weights chosen here (the session keeps them across pages)
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Map", exact=True).click()
    settle(page, "Map of the hypersphere")
    page.locator("[data-testid='stSelectbox']", has_text="Colour by").click()
    page.get_by_role("option", name="chosen weight").click()
    caption = page.get_by_text("share of the mixture chosen on Mix & Export (τ = 2, β = 0)")
    caption.wait_for(timeout=240_000)
    settle(page, "Map of the hypersphere")
    page.screenshot(path=str(out_dir / "map_chosen_weight.png"), full_page=True)
    page.close()


def test_two_sessions_do_not_share_unsaved_state(app_server, browser):
    one = browser.new_page()
    two = browser.new_page()
    for p in (one, two):
        p.goto(f"{app_server}/mix")
        settle(p, "Mix & Export")
    before = entropy(one)
    move_tau(one, 10)
    wait_until(lambda: tau_value(one) == "1.50", what="tau to read 1.50")
    wait_until(lambda: entropy(one) != before, what="the entropy to update")
    settle(one, "Mix & Export")
    two.reload()
    settle(two, "Mix & Export")
    assert tau_value(one) == "1.50"
    assert tau_value(two) == "1.00"  # the other session's unsaved tau did not leak
    assert entropy(two) == before
    assert entropy(one) > entropy(two)
    one.close()
    two.close()
