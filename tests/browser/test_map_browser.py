"""Chromium on the Map of a 200,000-document workspace: the density layer of every document,
and the UMAP layout arriving by itself (no click) while the page polls its background job.

The workspace is fitted here from planted synthetic data at small dimension (d = 16, K = 8,
ten MM iterations: about ten seconds); UMAP runs on a 1,000-document sample
(``GEM_APP_UMAP_SAMPLE``) and places the other 199,000 by their nearest sample neighbours.
Screenshots: ``map_density_200k.png`` (the instant layout) and ``map_umap_200k.png``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gem_app.app import state as app_state
from tests.browser.server import free_port, wait_healthy
from tests.browser.ui import CHROMIUM, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's Chromium at /usr/bin/chromium (apt install chromium)",
    ),
]
pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
GEM = Path(sys.executable).parent / "gem"
N_DOCUMENTS = 200_000


def synthetic_fit(root: Path, n: int, k: int = 8, d: int = 16, seed: int = 0) -> Path:
    """A workspace with one fit ``synthetic`` of n planted documents (K topics, Gaussian blobs)."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(k, size=n)
    words = np.array([f"w{i}" for i in range(200)])
    texts = [" ".join(r) for r in words[(topic[:, None] * 23 + rng.integers(0, 20, (n, 5))) % 200]]
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "text": texts,
            "topic": [f"t{t}" for t in topic],
            "tokens": rng.integers(20, 400, size=n),
        }
    )
    frame.to_parquet(root / "synthetic.parquet")
    X = rng.normal(size=(k, d))[topic] * 2.0 + rng.normal(size=(n, d))
    np.save(root / "synthetic.npy", X.astype(np.float32))
    ws = app_state.open_workspace(root / "workspace")
    app_state.fit_into_workspace(
        ws,
        "synthetic",
        root / "synthetic.parquet",
        n_clusters=k,
        embeddings=root / "synthetic.npy",
        label_col="topic",
        tokens_col="tokens",
        random_state=0,
        max_iter=10,
    )
    return ws.root


@pytest.fixture(scope="module")
def big_map_server(tmp_path_factory):
    """``gem app`` on the 200k workspace with the UMAP layout on (small sample)."""
    root = tmp_path_factory.mktemp("browser_map_200k")
    workspace = synthetic_fit(root, N_DOCUMENTS)
    port = free_port()
    env = dict(os.environ, GEM_APP_UMAP="1", GEM_APP_UMAP_SAMPLE="1000")
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(
            [str(GEM), "app", "--workspace", str(workspace), "--port", str(port)]
            + ["--address", "127.0.0.1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc)
            yield url, root / "server.log"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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
        what=f"the UMAP layout to replace the instant one (server log: {log})",
    )
    image.first.wait_for(state="attached", timeout=60_000)
    assert page.get_by_text("UMAP layout in the background").count() == 0
    assert page.locator("[data-testid='stException']").count() == 0
    page.wait_for_timeout(1500)  # let WebGL draw the points before the picture
    page.screenshot(path=str(out_dir / "map_umap_200k.png"), full_page=True)
    page.close()
