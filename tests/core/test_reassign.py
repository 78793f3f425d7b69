"""The frozen-geometry q-step (gem_app.core.reassign) against independent computations."""

import numpy as np
import pytest
from scipy.special import ive, softmax

from gem_app.core.gem import GEM
from gem_app.core.reassign import document_scores, q_from_scores, q_step


def _blobs(n=600, d=8, k=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    X = centres[rng.integers(k, size=n)] * 3 + rng.normal(size=(n, d))
    tokens = rng.integers(10, 200, size=n).astype(float)
    return X.astype(np.float32), tokens


@pytest.fixture(scope="module")
def fitted():
    X, tokens = _blobs()
    model = GEM(
        4, balance=0.5, temperature=0.8, random_state=0, device="cpu", tol=1e-9, max_iter=300
    ).fit(X, sample_weight=tokens)
    return model, X, tokens


def _independent_scores(model, X):
    """kappa mu.x + log C_d(kappa) + log pi, with log C_d from scipy's ive (safe at d = 8)."""
    x = np.asarray(model.transform(X.astype(np.float64)))
    d = x.shape[1]
    kappa = model.concentrations_
    nu = d / 2 - 1
    log_c = nu * np.log(kappa) - d / 2 * np.log(2 * np.pi) - (np.log(ive(nu, kappa)) + kappa)
    return x @ (kappa[:, None] * model.mean_directions_).T + log_c + np.log(model.prior_)


def test_scores_match_independent_formula_up_to_row_shift(fitted):
    model, X, _ = fitted
    s = document_scores(model, X)
    ref = _independent_scores(model, X)
    np.testing.assert_allclose(s.max(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(s, ref - ref.max(axis=1, keepdims=True), atol=2e-4)


def test_fit_temperature_and_balance_reproduce_fit_masses(fitted):
    model, X, tokens = fitted
    q, rho = q_step(model, X, model.temperature, model.balance, weights=tokens)
    np.testing.assert_allclose(rho, model.cluster_masses_, atol=1e-5)
    np.testing.assert_allclose(q, model.predict_proba(X), atol=1e-4)
    assert rho.sum() == pytest.approx(1.0, abs=1e-12)


def test_zero_balance_is_plain_softmax(fitted):
    model, X, tokens = fitted
    q, rho = q_step(model, X, 0.7, 0.0, weights=tokens)
    ref = softmax(_independent_scores(model, X) / 0.7, axis=1)
    np.testing.assert_allclose(q, ref, atol=1e-4)
    np.testing.assert_allclose(rho, tokens @ ref / tokens.sum(), atol=1e-5)


def test_huge_balance_gives_uniform_masses(fitted):
    model, X, tokens = fitted
    _, rho = q_step(model, X, 1.0, 1e6, weights=tokens)
    np.testing.assert_allclose(rho, 0.25, atol=1e-4)


def test_balance_moves_masses_towards_uniform(fitted):
    # T = 3: soft enough that the masses move measurably (near-hard q barely moves)
    model, X, tokens = fitted
    s = document_scores(model, X)
    spread = [
        np.ptp(q_from_scores(s, tokens, temperature=3.0, balance=lam).masses)
        for lam in (0.0, 1.0, 10.0)
    ]
    assert spread[0] > spread[1] > spread[2]


def test_stationarity_rho_equals_softmax_of_minus_eta(fitted):
    model, X, tokens = fitted
    s = document_scores(model, X)
    r = q_from_scores(s, tokens, temperature=0.5, balance=2.0)
    np.testing.assert_allclose(r.masses, softmax(-r.dual / 2.0), atol=1e-6)
    np.testing.assert_allclose(r.q.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"balance": -1.0}, "balance"),
        ({"temperature": float("nan")}, "temperature"),
    ],
)
def test_bad_parameters_are_named(fitted, kwargs, match):
    model, X, tokens = fitted
    with pytest.raises(ValueError, match=match):
        q_from_scores(document_scores(model, X), tokens, **kwargs)


def test_bad_weights_name_the_row(fitted):
    model, X, tokens = fitted
    w = tokens.copy()
    w[7] = -1
    with pytest.raises(ValueError, match="row 7"):
        q_from_scores(document_scores(model, X), w)
