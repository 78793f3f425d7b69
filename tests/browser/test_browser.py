"""A real browser (Playwright + Debian's Chromium) walks the app started by ``gem app``.

Screenshots of every page go to ``$GEM_TEST_OUTPUT`` (or the test's tmp_path).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jsonschema
import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's Chromium at /usr/bin/chromium (apt install chromium)",
    ),
]
playwright = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
SCHEMA = Path(__file__).resolve().parents[2] / "gem_app" / "export" / "mixture.schema.json"
PAGES = [
    ("data", "Data"),
    ("fit", "Fit"),
    ("map", "Map of the hypersphere"),
    ("taxonomy", "Taxonomy"),
    ("compare", "Compare with the human taxonomy"),
    ("mix", "Mix & Export"),
]
NAV_LABELS = {"map": "Map", "compare": "Compare"}  # sidebar link text where it differs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gem app exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("gem app did not become healthy")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("browser_ws")
    port = _free_port()
    env = dict(os.environ, GEM_APP_UMAP="0")
    log = open(workspace / "server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gem"),
            "app",
            "--workspace",
            str(workspace),
            "--port",
            str(port),
            "--address",
            "127.0.0.1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def out_dir(tmp_path):
    folder = Path(os.environ.get("GEM_TEST_OUTPUT") or tmp_path) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _settle(page, title: str, timeout: float = 240_000) -> None:
    page.get_by_role("heading", name=title).first.wait_for(timeout=timeout)
    page.wait_for_timeout(1000)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout
    )
    page.wait_for_timeout(1500)
    assert page.locator("[data-testid='stException']").count() == 0


def _entropy(page) -> float:
    metric = page.locator("[data-testid='stMetric']", has_text="Entropy")
    return float(metric.locator("[data-testid='stMetricValue']").inner_text().split()[0])


def _slider_value(page) -> str:
    slider = page.locator("[data-testid='stSlider']", has_text="Entropy temperature")
    return slider.locator("[data-testid='stSliderThumbValue']").inner_text().strip()


def test_walk_every_page_move_tau_and_download(server, browser, out_dir, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.goto(server)  # the Map is the default page
    _settle(page, "Map of the hypersphere")  # first launch: the sample is fitted, no click
    for slug, title in PAGES:
        nav = page.get_by_test_id("stSidebarNav")
        nav.get_by_role("link", name=NAV_LABELS.get(slug, title)).click()
        _settle(page, title)
        assert page.get_by_text("Page not found").count() == 0
        page.screenshot(path=str(out_dir / f"{slug}.png"), full_page=True)
    assert page.locator("[data-testid='stMetricValue']").count() >= 4
    before = _entropy(page)
    slider = page.get_by_role("slider", name="Entropy temperature τ")
    slider.focus()
    for _ in range(20):  # 20 steps of 0.05: tau 1.0 -> 2.0
        slider.press("ArrowRight")
    page.wait_for_timeout(500)
    _settle(page, "Mix & Export")
    after = _entropy(page)
    assert after > before
    page.screenshot(path=str(out_dir / "mix_tau2.png"), full_page=True)
    with page.expect_download() as info:
        page.get_by_role("button", name="gem", exact=True).click()
    target = tmp_path / "mixture.json"
    info.value.save_as(target)
    doc = json.loads(target.read_text())
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    assert doc["mixing"]["tau"] == pytest.approx(2.0)
    page.close()


def test_two_sessions_do_not_share_unsaved_state(server, browser):
    one = browser.new_page()
    two = browser.new_page()
    for p in (one, two):
        p.goto(f"{server}/mix")
        _settle(p, "Mix & Export")
    slider = one.get_by_role("slider", name="Entropy temperature τ")
    slider.focus()
    for _ in range(10):
        slider.press("ArrowRight")
    one.wait_for_timeout(500)
    _settle(one, "Mix & Export")
    two.reload()
    _settle(two, "Mix & Export")
    assert _slider_value(one) == "1.50"
    assert _slider_value(two) == "1.00"  # the other session's unsaved tau did not leak
    assert _entropy(one) > _entropy(two)
    one.close()
    two.close()
