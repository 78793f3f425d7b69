"""Point caps and sphere projections (gem_app.app.projection)."""

import numpy as np
import pytest

from gem_app.app.projection import (
    cluster_centres,
    principal_sphere,
    sphere_to_lonlat,
    stratified_sample,
)


def test_stratified_sample_caps_and_keeps_every_cluster():
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.zeros(9000), np.ones(900), np.full(3, 2)]).astype(int)
    rng.shuffle(labels)
    rows = stratified_sample(labels, 1000, random_state=1)
    assert len(rows) == 1000 and len(np.unique(rows)) == len(rows)
    assert np.all(np.diff(rows) > 0)
    counts = np.bincount(labels[rows], minlength=3)
    assert counts[2] == 1  # a tiny cluster is never dropped: its floor of one row
    # proportional allocation, within rounding
    assert abs(counts[0] - 1000 * 9000 / 9903) <= 2
    assert abs(counts[1] - 1000 * 900 / 9903) <= 2


def test_stratified_sample_returns_everything_under_the_cap():
    np.testing.assert_array_equal(stratified_sample(np.array([3, 1, 2]), 10), [0, 1, 2])


def test_stratified_sample_rejects_bad_cap():
    with pytest.raises(ValueError, match="cap"):
        stratified_sample(np.zeros(5, dtype=int), 0)


def test_principal_sphere_projects_onto_top_principal_directions():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(6, 10))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    x = rng.normal(size=(50, 10))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    xyz, centres = principal_sphere(x, mu)
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 1.0)
    # independent reference: eigenvectors of the covariance of the mean directions
    centred = mu - mu.mean(axis=0)
    vals, vecs = np.linalg.eigh(centred.T @ centred)
    top = vecs[:, np.argsort(vals)[::-1][:3]]
    ref = x @ top
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    signs = np.sign(np.sum(xyz * ref, axis=0))  # each axis is defined up to its sign
    assert np.all(signs != 0)
    np.testing.assert_allclose(xyz, ref * signs, atol=1e-8)
    ref_centres = mu @ top
    ref_centres /= np.linalg.norm(ref_centres, axis=1, keepdims=True)
    np.testing.assert_allclose(centres, ref_centres * signs, atol=1e-8)


def test_sphere_to_lonlat_round_trip():
    lon = np.array([0.0, 90.0, -45.0, 170.0])
    lat = np.array([0.0, 45.0, -30.0, 80.0])
    lo, la = np.radians(lon), np.radians(lat)
    xyz = np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])
    got_lon, got_lat = sphere_to_lonlat(xyz)
    np.testing.assert_allclose(got_lon, lon, atol=1e-9)
    np.testing.assert_allclose(got_lat, lat, atol=1e-9)


def test_cluster_centres_are_normalised_means():
    xyz = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    c = cluster_centres(xyz, np.array([0, 0, 1]), 3)
    np.testing.assert_allclose(c[0], [2**-0.5, 2**-0.5, 0])
    np.testing.assert_allclose(c[1], [0, 0, 1])
    assert np.all(np.isnan(c[2]))
