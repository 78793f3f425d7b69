"""Every document placed on the map, UMAP once per fit (gem_app.app.layout)."""

import time

import numpy as np
import pytest

from gem_app.app import layout as layout_module
from gem_app.app.layout import LAYOUT_FILE, MapLayout, place_by_neighbours
from gem_app.app.projection import principal_sphere


def _unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_place_by_neighbours_follows_the_nearest_anchor():
    rng = np.random.default_rng(0)
    anchors = _unit(rng.normal(size=(400, 24)))
    anchor_xyz = _unit(rng.normal(size=(400, 3)))
    # a point equal to an anchor lands on it
    same = place_by_neighbours(anchors[:50], anchors, anchor_xyz, chunk_rows=7)
    np.testing.assert_allclose(same, anchor_xyz[:50], atol=1e-5)
    # with one neighbour: the anchor of the largest cosine (brute-force reference)
    points = _unit(rng.normal(size=(300, 24)))
    got = place_by_neighbours(points, anchors, anchor_xyz, n_neighbors=1, chunk_rows=64)
    np.testing.assert_allclose(got, anchor_xyz[np.argmax(points @ anchors.T, axis=1)], atol=1e-6)
    blended = place_by_neighbours(points, anchors, anchor_xyz)
    np.testing.assert_allclose(np.linalg.norm(blended, axis=1), 1.0, atol=1e-9)


def test_place_by_neighbours_checks_shapes():
    with pytest.raises(ValueError, match="disagree"):
        place_by_neighbours(np.ones((2, 3)), np.ones((4, 3)), np.ones((3, 3)))


class _Model:
    """A fitted-model stand-in: the correction is a normalisation."""

    def __init__(self, mu):
        self.mean_directions_ = mu

    def transform(self, x):
        return _unit(np.asarray(x, dtype=np.float64))


def _corpus(n=3000, k=5, d=12, seed=0):
    rng = np.random.default_rng(seed)
    mu = _unit(rng.normal(size=(k, d)))
    labels = rng.integers(k, size=n)
    x = mu[labels] * 4 + rng.normal(size=(n, d))
    return x.astype(np.float32), labels, mu


def test_umap_layout_places_every_document_and_is_stored_once(tmp_path, monkeypatch):
    x, labels, mu = _corpus()
    calls = []

    def fake_umap(points, **kwargs):  # a layout of the sample: its first three coordinates
        calls.append(len(points))
        return _unit(np.asarray(points)[:, :3])

    monkeypatch.setattr(layout_module, "umap_sphere", fake_umap)
    layout = MapLayout(_Model(mu), x, labels, tmp_path)
    assert layout.umap() is None
    layout.compute(sample_size=500)
    assert calls == [500]
    rows, xyz = layout.umap()
    assert len(rows) == 500 and xyz.shape == (3000, 3)
    assert np.all(np.isfinite(xyz))
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(xyz[rows], _unit(_unit(x[rows])[:, :3]), atol=1e-5)
    # a document outside the sample sits next to its nearest sample neighbour of its cluster
    rest = np.setdiff1d(np.arange(3000), rows)
    sims = _unit(x[rest]) @ _unit(x[rows]).T
    sims[labels[rest][:, None] != labels[rows][None, :]] = -np.inf
    nearest = rows[np.argmax(sims, axis=1)]
    assert np.median(np.sum(xyz[rest] * xyz[nearest], axis=1)) > 0.95
    # stored in the fit's cache: another process (a new MapLayout) reads it, no UMAP again
    assert (tmp_path / LAYOUT_FILE).is_file()
    again = MapLayout(_Model(mu), x, labels, tmp_path)
    assert again.start() is False and calls == [500]
    np.testing.assert_array_equal(again.umap()[1], xyz)


def test_background_layout_reports_progress_and_finishes(tmp_path, monkeypatch):
    x, labels, mu = _corpus(n=800)

    def slow_umap(points, **kwargs):
        time.sleep(2.0)  # still running when the test looks
        return _unit(np.asarray(points)[:, :3])

    monkeypatch.setattr(layout_module, "umap_sphere", slow_umap)
    layout = MapLayout(_Model(mu), x, labels, tmp_path)
    assert layout.start(sample_size=100) is True
    assert layout.running() and layout.start(sample_size=100) is True  # one job only
    fraction, text = layout.progress()
    assert 0.0 <= fraction < 1.0 and "UMAP of 100 sample documents" in text
    layout._thread.join(timeout=60)
    assert not layout.running() and layout.error is None
    assert layout.umap()[1].shape == (800, 3)
    assert layout.progress()[0] == 1.0


def test_failed_layout_is_reported_and_the_instant_layout_stays(tmp_path, monkeypatch):
    x, labels, mu = _corpus(n=200)

    def broken(points, **kwargs):
        raise RuntimeError("no numba today")

    monkeypatch.setattr(layout_module, "umap_sphere", broken)
    layout = MapLayout(_Model(mu), x, labels, tmp_path)
    layout.start(sample_size=50)
    layout._thread.join(timeout=60)
    assert layout.error == "RuntimeError: no numba today"
    assert layout.umap() is None and not (tmp_path / LAYOUT_FILE).exists()
    assert layout.start(sample_size=50) is False  # not restarted on every page rerun
    assert layout.error == "RuntimeError: no numba today"
    assert layout.principal().shape == (200, 3)


def test_point_rows_are_a_stratified_sample(tmp_path):
    x, labels, mu = _corpus(n=2000)
    rows = MapLayout(_Model(mu), x, labels, tmp_path).point_rows(100)
    assert len(rows) == 100 and set(labels[rows]) == set(labels)


def test_principal_layout_of_every_document_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(layout_module, "_CHUNK", 300)  # several chunks
    x, labels, mu = _corpus(n=1000)
    got = MapLayout(_Model(mu), x, labels, tmp_path).principal()
    reference, _ = principal_sphere(_unit(x.astype(np.float64)), mu)
    assert got.shape == (1000, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference, atol=1e-5)
