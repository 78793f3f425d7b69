"""Reading the Streamlit app in Chromium: wait for a page to settle, read its widgets."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# the marks of every browser test module (its ``pytestmark``)
BROWSER_MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's Chromium at /usr/bin/chromium (apt install chromium)",
    ),
]
NAV = ["Data", "Fit", "Map", "Taxonomy", "Compare", "Evaluate", "Mix & Export"]  # sidebar links
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STATUS = "[data-testid='stStatusWidget']"  # shown while a script run is in progress


def wait_until(condition, *, timeout: float = 240.0, what: str = "the condition") -> None:
    """Poll ``condition()`` until it is true (a wait for an event, not a timing check)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.25)


def settle(page, title: str, *, timeout: float = 240.0) -> None:
    """Wait for the page's heading, then for the app to be idle for 1.5 s; no exception shown."""
    page.get_by_role("heading", name=title).first.wait_for(timeout=timeout * 1000)
    quiet_since = [None]

    def idle() -> bool:
        if page.locator(STATUS).count():
            quiet_since[0] = None
            return False
        quiet_since[0] = quiet_since[0] or time.monotonic()
        return time.monotonic() - quiet_since[0] >= 1.5

    wait_until(idle, timeout=timeout, what=f"the {title!r} page to finish running")
    assert page.locator("[data-testid='stException']").count() == 0


def nav_links(page) -> list[str]:
    """The link labels of the sidebar navigation, in order (without the icons' names)."""
    nav = page.get_by_test_id("stSidebarNav")
    return [text.strip().splitlines()[-1] for text in nav.get_by_role("link").all_inner_texts()]


def metric_value(page, label: str) -> str:
    metric = page.locator("[data-testid='stMetric']", has_text=label)
    return metric.locator("[data-testid='stMetricValue']").inner_text().strip()


def entropy(page) -> float:
    return float(metric_value(page, "Entropy").split()[0])


def tau_value(page) -> str:
    slider = page.locator("[data-testid='stSlider']", has_text="Entropy temperature")
    return slider.locator("[data-testid='stSliderThumbValue']").inner_text().strip()


def move_tau(page, steps: int) -> None:
    """Press the right arrow ``steps`` times on the tau slider (0.05 each)."""
    slider = page.get_by_role("slider", name="Entropy temperature τ")
    slider.focus()
    for _ in range(steps):
        slider.press("ArrowRight")
