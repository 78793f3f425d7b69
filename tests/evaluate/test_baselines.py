"""Tests of gem_app.evaluate.baselines: each baseline on planted data, the vMF maths, the measures."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

from gem_app.core.gem import GEM
from gem_app.core.sphere import SphereTransform
from gem_app.core.vmf import mean_resultant
from gem_app.core.vmf_em import VMFMixture, fit_vmf_to_labels, vmf_log_likelihood
from gem_app.evaluate.baselines import BASELINES, cluster_balance, run_baseline, seed_stability


def planted(n=300, d=12, shares=(0.25, 0.25, 0.25, 0.25), spread=0.35, offset=2.0, seed=0):
    """Well separated directions plus a shared offset (anisotropy), and the true labels."""
    rng = np.random.default_rng(seed)
    K = len(shares)
    centres = np.linalg.qr(rng.normal(size=(d, K)))[0].T  # orthonormal directions
    y = rng.choice(K, size=n, p=np.asarray(shares) / np.sum(shares))
    X = centres[y] + spread * rng.normal(size=(n, d)) / np.sqrt(d)
    X = X / np.linalg.norm(X, axis=1, keepdims=True) + offset * np.ones(d) / np.sqrt(d)
    return X, y


@pytest.mark.parametrize("name", ["kmeans", "spherical-kmeans", "vmf-em"])
def test_k_controlled_baselines_recover_planted_clusters(name):
    X, y = planted()
    weights = np.random.default_rng(1).integers(5, 50, size=len(X))
    started = time.perf_counter()
    result = run_baseline(name, X, 4, sample_weight=weights, random_state=0)
    elapsed = time.perf_counter() - started
    assert result.name == name
    assert result.labels.shape == (len(X),)
    assert result.n_outliers == 0 and result.labels.min() >= 0
    assert adjusted_mutual_info_score(y, result.labels) > 0.95
    assert 0 < result.seconds <= elapsed  # the fit's own wall time, within the call's
    if name == "vmf-em":
        assert result.proba.shape == (len(X), 4)
        np.testing.assert_allclose(result.proba.sum(axis=1), 1.0, atol=1e-12)
        np.testing.assert_array_equal(result.labels, result.proba.argmax(axis=1))
    else:
        assert result.proba is None


@pytest.mark.slow  # UMAP's numba compilation: ~10-20 s once per process
def test_bertopic_pipeline_finds_clusters_and_reports_outliers():
    X, y = planted(n=240, d=10, spread=0.2)
    result = run_baseline("bertopic", X, 4, random_state=0, min_cluster_size=15)
    assert result.proba is None
    assert result.n_outliers == int((result.labels == -1).sum())
    inliers = result.labels >= 0
    assert inliers.mean() > 0.8
    assert adjusted_mutual_info_score(y[inliers], result.labels[inliers]) > 0.9
    reducer, clusterer = result.model
    assert reducer.embedding_.shape == (len(X), 5)


def test_vmf_em_learned_prior_moves_while_gem_prior_stays_fixed():
    X, y = planted(n=400, shares=(0.7, 0.2, 0.1), seed=3)
    true_shares = np.bincount(y) / len(y)
    em = VMFMixture(3, random_state=0).fit(X)
    assert em.weights_.sum() == pytest.approx(1.0)
    # The learned prior equals the cluster masses, i.e. the planted imbalance.
    np.testing.assert_allclose(np.sort(em.weights_), np.sort(true_shares), atol=0.02)
    np.testing.assert_allclose(em.weights_, em.cluster_masses_, atol=1e-6)
    fixed = VMFMixture(3, learn_prior=False, random_state=0).fit(X)
    np.testing.assert_allclose(fixed.weights_, 1 / 3)
    gem = GEM(3, balance=0.0, random_state=0).fit(X)
    np.testing.assert_allclose(gem.prior_, 1 / 3)
    assert adjusted_mutual_info_score(y, em.labels_) > 0.95


def test_vmf_em_with_fixed_prior_is_gem_without_balance():
    X, _ = planted(n=200, d=6, spread=0.9, seed=5)
    x = SphereTransform().fit_transform(X)
    init = x[[0, 50, 100, 150]]
    em = VMFMixture(4, learn_prior=False, init=init, max_iter=2000, tol=1e-14).fit(X)
    gem = GEM(
        4,
        balance=0.0,
        temperature=1.0,
        concentration="per-cluster",
        init=init,
        max_iter=2000,
        tol=1e-14,
        device="cpu",
    ).fit(X)
    np.testing.assert_allclose(em.mean_directions_, gem.mean_directions_, atol=1e-5)
    np.testing.assert_allclose(em.concentrations_, gem.concentrations_, rtol=1e-4)
    np.testing.assert_allclose(em.predict_proba(X), gem.predict_proba(X), atol=1e-5)


def test_vmf_em_log_likelihood_increases_and_predict_matches_fit():
    X, _ = planted(n=300, spread=0.8, seed=7)
    em = VMFMixture(4, concentration="tied", random_state=2).fit(X)
    history = np.asarray(em.log_likelihood_history_)
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[1:]))
    assert np.unique(em.concentrations_).size == 1
    np.testing.assert_array_equal(em.predict(X), em.labels_)
    assert em.score_samples(X).mean() == pytest.approx(em.log_likelihood_, rel=1e-9)


def test_vmf_log_likelihood_matches_scipy_in_low_dimension():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(2, 3))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    kappa = np.array([2.5, 40.0])
    weights = np.array([0.3, 0.7])
    x = rng.normal(size=(50, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    reference = logsumexp(
        np.stack(
            [
                np.log(w) + stats.vonmises_fisher(m, k).logpdf(x)
                for m, k, w in zip(mu, kappa, weights, strict=True)
            ]
        ),
        axis=0,
    )
    np.testing.assert_allclose(
        vmf_log_likelihood(x, mu, kappa, np.log(weights)), reference, rtol=1e-10
    )


def test_fit_vmf_to_labels_is_the_maximum_likelihood_vmf_per_cluster():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 5)) + np.array([3.0, 0, 0, 0, 0])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.repeat([-1, 2, 7], 20)
    weight = rng.uniform(1, 3, size=60)
    ids, mu, kappa, masses = fit_vmf_to_labels(x, labels, weight)
    np.testing.assert_array_equal(ids, [-1, 2, 7])
    for j, label in enumerate(ids):
        rows = labels == label
        resultant = (weight[rows, None] * x[rows]).sum(axis=0)
        np.testing.assert_allclose(mu[j], resultant / np.linalg.norm(resultant), atol=1e-12)
        rbar = np.linalg.norm(resultant) / weight[rows].sum()
        assert mean_resultant(5, kappa[j]) == pytest.approx(rbar, rel=1e-9)
        assert masses[j] == pytest.approx(weight[rows].sum() / weight.sum())


def test_cluster_balance_by_hand():
    labels = np.array([0, 0, 1, 1, 1, -1])
    weights = np.array([1.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    out = cluster_balance(labels, weights, n_clusters=2)
    rho = np.array([2.0, 6.0]) / 8.0
    assert out["balance"] == pytest.approx(-(rho * np.log(rho)).sum() / np.log(2))
    assert out["largest_share"] == pytest.approx(6 / 10)
    assert out["outlier_share"] == pytest.approx(2 / 10)
    assert out["n_clusters_found"] == 2
    # Asking for 4 clusters while finding 2: the empty ones lower the balance.
    assert cluster_balance(labels, weights, n_clusters=4)["balance"] == pytest.approx(
        -(rho * np.log(rho)).sum() / np.log(4)
    )


def test_seed_stability_is_mean_pairwise_ari():
    rng = np.random.default_rng(0)
    runs = [rng.integers(0, 3, size=40) for _ in range(3)]
    expected = np.mean([adjusted_rand_score(runs[i], runs[j]) for i, j in ((0, 1), (0, 2), (1, 2))])
    assert seed_stability(runs) == pytest.approx(expected)
    assert seed_stability([runs[0], (runs[0] + 1) % 3]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        seed_stability([runs[0]])


def test_bad_input_is_rejected():
    X, _ = planted(n=20)
    assert set(BASELINES) == {"kmeans", "spherical-kmeans", "vmf-em", "bertopic"}
    with pytest.raises(ValueError, match="unknown baseline 'dbscan'"):
        run_baseline("dbscan", X, 3)
    with pytest.raises(ValueError, match="larger than the 20 rows"):
        run_baseline("kmeans", X, 21)
    with pytest.raises(ValueError, match="positive integer"):
        run_baseline("vmf-em", X, 0)
    with pytest.raises(ValueError, match=r"sample_weight\[2\]"):
        run_baseline("kmeans", X, 3, sample_weight=np.r_[1.0, 1.0, -1.0, np.ones(17)])
    X_bad = X.copy()
    X_bad[5] = np.nan
    with pytest.raises(ValueError, match="row 5"):
        run_baseline("kmeans", X_bad, 3)
    with pytest.raises(ValueError, match="larger than the 20 rows"):
        VMFMixture(21).fit(X)
    with pytest.raises(ValueError, match="concentration"):
        VMFMixture(3, concentration="free").fit(X)
