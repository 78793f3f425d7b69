"""The app's non-UI logic (gem_app.app.state, gem_app.app.views) on small synthetic data."""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gem_app.app import state as app_state
from gem_app.app.bundle import APP_ENTRY, PAGES_DIR, SAMPLE_DATA, SAMPLE_EMBEDDINGS
from gem_app.cli import app_cmd
from gem_app.evaluate.selection import sweep_k
from gem_app.export.domains import domains_from_run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_fit(tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    rng = np.random.default_rng(0)
    n, k = 120, 3
    topic = rng.integers(k, size=n)
    texts = [f"alpha{t} beta{t} gamma{t} common word {i % 7}" for i, t in enumerate(topic)]
    data = root / "corpus.csv"
    pd.DataFrame(
        {
            "id": range(n),
            "text": texts,
            "cat": [f"c{t}" for t in topic],
            "tokens": rng.integers(5, 50, size=n),
        }
    ).to_csv(data, index=False)
    X = (np.eye(8)[topic] * 4 + rng.normal(size=(n, 8))).astype(np.float32)
    emb = root / "emb.npy"
    np.save(emb, X)
    ws = app_state.open_workspace(root / "workspace")
    app_state.fit_into_workspace(
        ws,
        "small",
        data,
        n_clusters=k,
        embeddings=emb,
        label_col="cat",
        tokens_col="tokens",
        random_state=0,
        device="cpu",
    )
    return ws, topic


def test_fit_is_saved_and_viewed(small_fit):
    ws, topic = small_fit
    assert app_state.list_fits(ws) == ["small"]
    view = app_state.fit_view(ws, "small")
    assert app_state.fit_view(ws, "small") is view  # shared, computed once
    assert not view.q.flags.writeable
    np.testing.assert_allclose(view.q, view.run.proba(), atol=1e-6)
    np.testing.assert_allclose(view.q.sum(axis=1), 1.0, atol=1e-5)
    rho = np.asarray(view.model.cluster_masses_, dtype=float)
    np.testing.assert_allclose(view.masses, rho / rho.sum(), rtol=1e-12)
    tokens = view.run.frame["tokens"].to_numpy(float)
    np.testing.assert_allclose(
        view.cluster_tokens, [tokens[view.hard_labels == k].sum() for k in range(3)]
    )
    # the clusters recover the three planted topics
    assert view.comparison.ari > 0.9
    table = view.cluster_documents(0, limit=5)
    assert np.all(np.diff(table["probability"].to_numpy()) <= 1e-9)  # representative first
    assert (view.hard_labels[table["row"]] == 0).all()
    assert list(table.columns[:3]) == ["row", "probability", "id"] and "cluster" not in table
    np.testing.assert_allclose(table["probability"], view.q[table["row"], 0])
    codes, categories = view.human_codes  # the Map's "human category" colours, coded once
    assert view.human_codes is view.human_codes and not codes.flags.writeable
    assert (np.asarray(categories)[codes] == view.human).all()
    r = view.reassign(view.model.temperature, view.model.balance)
    np.testing.assert_allclose(r.masses, view.model.cluster_masses_, atol=1e-5)


def test_cluster_domains_match_export(small_fit):
    ws, _ = small_fit
    view = app_state.fit_view(ws, "small")
    mine = view.domains()
    ref = domains_from_run(view.run)
    assert [d.name for d in mine.domains] == [d.name for d in ref.domains]
    assert [d.tokens for d in mine.domains] == [d.tokens for d in ref.domains]
    np.testing.assert_allclose(
        [d.gis for d in mine.domains], [d.gis for d in ref.domains], atol=1e-9
    )
    np.testing.assert_array_equal(mine.document_domain, ref.document_domain)


def test_bad_run_names_and_uploads_are_refused(small_fit):
    ws, _ = small_fit
    with pytest.raises(ValueError, match="run name"):
        app_state.check_run_name("../evil")
    with pytest.raises(ValueError, match="unsupported file type"):
        app_state.save_upload(ws, "data.exe", b"x")
    path = app_state.save_upload(ws, "my data.jsonl", b'{"id": 1, "text": "x"}\n')
    assert path.parent == ws.root / "uploads" and path.suffix == ".jsonl"
    assert app_state.save_upload(ws, "my data.jsonl", b'{"id": 1, "text": "x"}\n') == path


def test_sweep_k_prefers_the_planted_k(small_fit, tmp_path):
    rng = np.random.default_rng(1)
    n = 150
    topic = rng.integers(3, size=n)
    data = tmp_path / "c.csv"
    pd.DataFrame({"id": range(n), "text": ["w"] * n}).to_csv(data, index=False)
    emb = tmp_path / "e.npy"
    np.save(emb, (np.eye(6)[topic] * 6 + rng.normal(size=(n, 6))).astype(np.float32))
    curve = sweep_k(data, [2, 3, 6], embeddings=emb, random_state=0, device="cpu")
    assert list(curve["k"]) == [2, 3, 6]
    assert curve.loc[curve["bic"].idxmin(), "k"] == 3


def test_app_command_line():
    args = argparse.Namespace(port=8765, address="127.0.0.1", open_browser=False, workspace=None)
    cmd = app_cmd.command(args)
    assert cmd[1:4] == ["-m", "streamlit", "run"]
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[cmd.index("--server.port") + 1] == "8765"
    assert cmd[4] == str(APP_ENTRY) and APP_ENTRY.is_file()
    with pytest.raises(ValueError, match="port"):
        app_cmd.command(argparse.Namespace(port=0, address="x", open_browser=False, workspace=None))
    args.open_browser = True
    assert app_cmd.command(args)[app_cmd.command(args).index("--server.headless") + 1] == "false"


def test_bundled_files_are_found_in_the_checkout():
    # an editable install: the top-level pages/ and sample_data/ of the repository
    assert PAGES_DIR == REPO / "pages"
    assert APP_ENTRY == REPO / "pages" / "streamlit_app.py" and APP_ENTRY.is_file()
    assert SAMPLE_DATA == REPO / "sample_data" / "debian_packages.parquet" and SAMPLE_DATA.is_file()
    assert (
        SAMPLE_EMBEDDINGS == REPO / "sample_data" / "embeddings.npy" and SAMPLE_EMBEDDINGS.is_file()
    )
