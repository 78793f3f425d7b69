"""GEM estimator: monotone MM, special cases against independent code, recovery, I/O, bad input."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq, minimize
from scipy.special import ive, logsumexp
from scipy.stats import vonmises_fisher
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_mutual_info_score

from gem_app.core import dual
from gem_app.core.gem import GEM

# ----------------------------------------------------------------- independent references


def ref_log_c(d, kappa):
    """log C_d(kappa) from scipy's ive (accurate for the small d used here)."""
    nu = d / 2 - 1
    kappa = np.asarray(kappa, dtype=np.float64)
    return nu * np.log(kappa) - d / 2 * np.log(2 * np.pi) - (np.log(ive(nu, kappa)) + kappa)


def ref_kappa(d, rbar):
    nu = d / 2 - 1
    return brentq(lambda k: ive(nu + 1, k) / ive(nu, k) - rbar, 1e-6, 1e6, xtol=1e-14, rtol=1e-14)


def unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def ref_objective(x, a, mu, kappa, log_prior, q, T, lam):
    d = x.shape[1]
    s = kappa * (x @ mu.T) + ref_log_c(d, kappa) + log_prior
    A = a.sum()
    qlogq = np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0.0)
    rho = (a[:, None] * q).sum(0) / A
    h_rho = -np.sum(rho[rho > 0] * np.log(rho[rho > 0]))
    return (a @ (q * s).sum(1)) / A - T * (a @ qlogq.sum(1)) / A + lam * h_rho


def planted(n_per, d, kappa, seed, offset=0.0):
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(len(n_per), d)))
    X, y = [], []
    for k, n in enumerate(n_per):
        X.append(vonmises_fisher(centres[k], kappa).rvs(n, random_state=rng))
        y += [k] * n
    X = np.vstack(X)
    if offset:
        X = X + offset * unit(rng.normal(size=(1, d)))
    return X, np.array(y), centres


# ----------------------------------------------------------------- monotone MM


@st.composite
def mm_problems(draw):
    n = draw(st.integers(8, 80))
    d = draw(st.integers(2, 12))
    K = draw(st.integers(1, min(64, n)))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["gauss", "anisotropic", "duplicated"]))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if kind == "anisotropic":  # a narrow cone: R0 > 0.9
        X = X * 0.1 + 3.0 * unit(rng.normal(size=(1, d)))
    elif kind == "duplicated":
        base = rng.normal(size=(max(2, n // 4), d))
        X = base[rng.integers(0, len(base), size=n)]
    lam = draw(st.sampled_from([0.0, 0.1, 1.0, 10.0, 1e3]))
    T = draw(st.sampled_from([0.2, 1.0, 3.0]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    conc = draw(st.sampled_from(["tied", "per-cluster"]))
    weights = draw(st.booleans())
    a = rng.integers(1, 50, size=n).astype(float) if weights else None
    return X.astype(dtype), a, K, lam, T, conc, seed


@settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(mm_problems())
def test_objective_never_decreases(problem):
    X, a, K, lam, T, conc, seed = problem
    model = GEM(K, balance=lam, temperature=T, concentration=conc, max_iter=30, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, sample_weight=a)
    h = np.asarray(model.objective_history_)
    assert np.all(np.isfinite(h))
    if X.dtype == np.float64:
        slack = 1e-9 * np.maximum(1.0, np.abs(h[1:]))
    else:  # float32 scores kappa mu.x carry an absolute rounding error of about kappa * 1e-7
        slack = 1e-5 * np.maximum(np.abs(h[1:]), max(1.0, model.concentrations_.max()))
    assert np.all(np.diff(h) >= -slack), np.diff(h).min()


def test_recorded_objective_matches_independent_formula():
    X, _, _ = planted([60, 40, 30], d=5, kappa=8.0, seed=1)
    a = np.random.default_rng(0).integers(1, 9, len(X)).astype(float)
    model = GEM(3, balance=0.7, temperature=0.8, concentration="per-cluster", random_state=0)
    model.fit(X, sample_weight=a)
    x = model.transform(X)
    q = model.predict_proba(X)
    J = ref_objective(
        x, a, model.mean_directions_, model.concentrations_, np.log(model.prior_), q, 0.8, 0.7
    )
    assert J == pytest.approx(model.objective_, rel=1e-9)
    rho = (a[:, None] * q).sum(0) / a.sum()
    np.testing.assert_allclose(rho, model.cluster_masses_, atol=1e-10)


# ----------------------------------------------------------------- special cases


def test_lambda0_T1_is_vmf_em_with_fixed_prior():
    X, _, _ = planted([80, 50, 30], d=4, kappa=6.0, seed=2)
    x = unit(X)
    init = x[[0, 90, 140]]
    prior = np.array([0.5, 0.3, 0.2])
    n_iter = 40
    model = GEM(
        3,
        balance=0.0,
        temperature=1.0,
        prior=prior,
        init=init,
        center=False,
        concentration="per-cluster",
        tol=0.0,
        max_iter=n_iter,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)

    # independent EM with the same schedule: hard start from the init, then n_iter (E, M) rounds
    d = x.shape[1]
    resp = np.eye(3)[np.argmax(x @ init.T, axis=1)]
    for _ in range(n_iter + 1):
        r = resp.T @ x
        n = resp.sum(0)
        mu = unit(r)
        kappa = np.array([ref_kappa(d, np.linalg.norm(r[k]) / n[k]) for k in range(3)])
        logp = kappa * (x @ mu.T) + ref_log_c(d, kappa) + np.log(prior)
        resp = np.exp(logp - logsumexp(logp, axis=1, keepdims=True))
    new = resp
    np.testing.assert_allclose(model.mean_directions_, mu, atol=1e-10)
    np.testing.assert_allclose(model.concentrations_, kappa, rtol=1e-7)
    # kappa agrees to 1e-7 (relative), so log-odds kappa * mu.x agree to ~1e-6 at most
    np.testing.assert_allclose(model.predict_proba(X), new, atol=1e-7)


def test_small_temperature_with_tied_kappa_is_spherical_kmeans():
    X, _, _ = planted([70, 60, 50, 40], d=6, kappa=40.0, seed=3)
    x = unit(X)
    rng = np.random.default_rng(0)
    init = x[rng.choice(len(x), 4, replace=False)]
    model = GEM(
        4,
        balance=0.0,
        temperature=1e-4,
        init=init,
        center=False,
        concentration="tied",
        tol=0,
        max_iter=100,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X)

    centres = init.copy()
    for _ in range(100):
        labels = np.argmax(x @ centres.T, axis=1)
        centres = unit(np.array([x[labels == k].sum(0) for k in range(4)]))
    np.testing.assert_array_equal(model.labels_, np.argmax(x @ centres.T, axis=1))
    np.testing.assert_allclose(model.mean_directions_, centres, atol=1e-8)


def test_huge_balance_gives_equal_masses():
    X, _, _ = planted([200, 40, 20], d=5, kappa=10.0, seed=4)
    model = GEM(3, balance=1e6, random_state=0).fit(X)
    np.testing.assert_allclose(model.cluster_masses_, 1 / 3, atol=1e-4)


def test_dual_solution_maximises_the_q_step():
    """solve_dual's eta matches scipy's minimiser of g, and rho(eta) = softmax(-eta/lambda)."""
    rng = np.random.default_rng(5)
    S = rng.normal(size=(50, 4)) * 3
    a = rng.integers(1, 5, 50).astype(float)
    T, lam = 0.7, 2.0
    rows = SimpleNamespace(  # what the dual reads
        weight=[torch.tensor(a)],
        total_weight=a.sum(),
        device=torch.device("cpu"),
        dtype=torch.float64,
    )

    def g(eta):
        return T * (a @ logsumexp((S + eta) / T, axis=1)) / a.sum() + lam * logsumexp(-eta / lam)

    eta, stats, _ = dual.solve_dual(
        [torch.tensor(S)],
        rows,
        np.zeros(4),
        T,
        lam,
        floor=-np.inf,
        gap_tol=1e-14,
    )
    ref = minimize(g, np.zeros(4), method="BFGS", options={"gtol": 1e-12}).x
    np.testing.assert_allclose(eta - eta.mean(), ref - ref.mean(), atol=1e-5)
    beta = np.exp(-eta / lam - logsumexp(-eta / lam))
    np.testing.assert_allclose(stats.masses, beta, atol=1e-10)
    assert stats.objective(eta, T, lam) == pytest.approx(g(eta), abs=1e-9)  # zero duality gap


# ----------------------------------------------------------------- recovery and determinism


def test_planted_anisotropic_mixture_is_recovered():
    sizes = [600, 400, 300, 200, 150, 120, 100, 80, 60, 50]
    X, y, _ = planted(sizes, d=64, kappa=200.0, seed=6, offset=2.0)
    for seed in range(3):
        model = GEM(10, random_state=seed).fit(X.astype(np.float32))
        assert model.anisotropy_ > 0.9
        assert adjusted_mutual_info_score(y, model.labels_) > 0.9


def test_same_seed_same_result_and_predict_proba_equals_fit():
    X, _, _ = planted([100, 80, 60], d=8, kappa=15.0, seed=7)
    X = X.astype(np.float32)
    m1 = GEM(3, random_state=11).fit(X)
    m2 = GEM(3, random_state=11).fit(X)
    np.testing.assert_array_equal(m1.labels_, m2.labels_)
    np.testing.assert_array_equal(m1.mean_directions_, m2.mean_directions_)
    q = m1.predict_proba(X)
    assert q.dtype == np.float32 and q.shape == (len(X), 3)
    np.testing.assert_array_equal(q.argmax(1), m1.labels_)
    np.testing.assert_allclose(q.astype(np.float64).mean(0), m1.cluster_masses_, atol=1e-6)
    np.testing.assert_array_equal(m1.predict(X), m1.labels_)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_clone_random_state_and_cluster_api():
    X, _, _ = planted([60, 50], d=5, kappa=20.0, seed=17)
    model = GEM(2, balance=0.5, init="random", random_state=4)
    assert clone(model).get_params() == model.get_params()
    labels = model.fit_predict(X)
    np.testing.assert_array_equal(labels, model.labels_)
    assert not hasattr(clone(model), "labels_") and model.random_state == 4
    # a RandomState or Generator is drawn from: successive fits use other seeds
    for state in (np.random.RandomState(0), np.random.default_rng(0)):
        first = GEM(2, init="random", max_iter=1, random_state=state).fit(X)
        second = GEM(2, init="random", max_iter=1, random_state=state).fit(X)
        assert not np.array_equal(first.objective_history_, second.objective_history_)
    np.testing.assert_array_equal(model.fit_transform(X), model.transform(X))
    assert model.get_feature_names_out().tolist() == [f"x{i}" for i in range(5)]


def test_predict_proba_against_independent_posterior():
    X, _, _ = planted([50, 50], d=3, kappa=5.0, seed=8)
    model = GEM(2, balance=0.5, temperature=1.5, random_state=0).fit(X)
    x = model.transform(X)
    s = model.concentrations_ * (x @ model.mean_directions_.T) + ref_log_c(3, model.concentrations_)
    z = (s + np.log(model.prior_) + model.dual_) / 1.5
    np.testing.assert_allclose(
        model.predict_proba(X), np.exp(z - logsumexp(z, 1, keepdims=True)), atol=1e-10
    )


def test_torch_input_and_float32_agree_with_float64():
    X, _, _ = planted([60, 40], d=6, kappa=20.0, seed=9)
    m64 = GEM(2, random_state=0).fit(X)
    m32 = GEM(2, random_state=0).fit(torch.tensor(X, dtype=torch.float32))
    np.testing.assert_allclose(m32.mean_directions_, m64.mean_directions_, atol=1e-4)
    q = m32.predict_proba(torch.tensor(X, dtype=torch.float32))
    assert isinstance(q, torch.Tensor)
    np.testing.assert_allclose(q.numpy(), m64.predict_proba(X), atol=1e-4)


def test_n_init_keeps_the_best_objective():
    X, _, _ = planted([40, 40, 40, 40], d=5, kappa=10.0, seed=10)
    singles = [GEM(4, random_state=s).fit(X).objective_ for s in range(3)]
    best = GEM(4, n_init=3, random_state=0).fit(X).objective_
    assert best >= min(singles) - 1e-9


def test_callback_receives_every_iteration():
    X, _, _ = planted([40, 40], d=4, kappa=10.0, seed=11)
    seen = []
    model = GEM(2, random_state=0, callback=lambda i, j: seen.append((i, j))).fit(X)
    assert [i for i, _ in seen] == list(range(1, model.n_iter_ + 1))
    assert all(np.isfinite(j) for _, j in seen)


# ----------------------------------------------------------------- persistence


def test_save_load_round_trip(tmp_path):
    X, _, _ = planted([50, 30], d=5, kappa=10.0, seed=12)
    model = GEM(2, whiten=True, random_state=0).fit(X)
    model.save(tmp_path / "m", metadata={"rejected_rows": []})
    loaded = GEM.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-12)
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["objective_history"] == pytest.approx(model.objective_history_)
    assert not list(tmp_path.glob("m/.*tmp"))


def test_load_refuses_other_format_versions(tmp_path):
    X, _, _ = planted([20, 20], d=3, kappa=5.0, seed=13)
    GEM(2, random_state=0).fit(X).save(tmp_path)
    doc = json.loads((tmp_path / "model.json").read_text())
    doc["format_version"] = 99
    (tmp_path / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="format_version 99"):
        GEM.load(tmp_path)


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"n_clusters": 0},
            r"'n_clusters' parameter of GEM must be an int in the range \[1, inf\)\. Got 0",
        ),
        ({"n_clusters": -2}, "'n_clusters' parameter of GEM .* Got -2 instead"),
        ({"n_clusters": True}, "'n_clusters' parameter of GEM .* Got True instead"),
        ({"n_clusters": 2.0}, "'n_clusters' parameter of GEM .* Got 2.0 instead"),
        ({"n_clusters": 50}, r"n_clusters=50 is larger than the number of valid rows \(20"),
        (
            {"balance": -0.1},
            r"'balance' parameter of GEM must be a float in the range \[0.0, inf\)",
        ),
        ({"balance": np.inf}, "'balance' parameter of GEM .* Got inf instead"),
        ({"temperature": 0.0}, r"'temperature' .* range \(0.0, inf\)\. Got 0.0 instead"),
        ({"temperature": -1.0}, "'temperature' parameter of GEM"),
        ({"tol": np.nan}, "'tol' parameter of GEM .* Got nan instead"),
        ({"max_iter": 2.5}, "'max_iter' parameter of GEM"),
        ({"concentration": "free"}, "'concentration' parameter of GEM must be a str among"),
        ({"init": "kmeans"}, "'init' parameter of GEM must be a str among .* or an array-like"),
        ({"init": np.ones((3, 3))}, r"init array must have shape \(2, 3\)"),
        ({"prior": [1.0, 0.0]}, "prior must be finite and > 0; entry 1"),
        ({"center": 1}, "'center' parameter of GEM must be an instance of 'bool'"),
        ({"device": 3}, "'device' parameter of GEM must be an instance of 'str'"),
        ({"random_state": "seed"}, "'random_state' parameter of GEM"),
        ({"callback": 5}, "'callback' parameter of GEM must be a callable or None"),
    ],
)
def test_bad_parameters_raise(kwargs, message):
    X = np.random.default_rng(0).normal(size=(20, 3))
    params = {"n_clusters": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        GEM(**params).fit(X)


@pytest.mark.parametrize(
    "row, message",
    [(np.nan, r"row 3 \(contains NaN"), (np.inf, r"row 3 \(contains Inf"), (0.0, r"row 3 \(zero")],
)
def test_invalid_rows_are_named(row, message):
    X = np.random.default_rng(0).normal(size=(10, 4))
    model = GEM(2, random_state=0).fit(X[[0, 1, 2, 4, 5, 6, 7, 8, 9]])
    X[3] = row
    with pytest.raises(ValueError, match=message):
        GEM(2).fit(X)
    with pytest.raises(ValueError, match=message):
        model.predict_proba(X)


def test_one_dimensional_embeddings_are_refused():
    with pytest.raises(ValueError, match=r"1 feature\(s\) .* minimum of 2 .*d >= 2"):
        GEM(2).fit(np.ones((10, 1)))


def test_identical_rows_are_refused_with_centering():
    with pytest.raises(ValueError, match=r"10 row\(s\) with no direction left"):
        GEM(2).fit(np.ones((10, 3)))
    model = GEM(1, center=False).fit(np.ones((10, 3)))  # the library can skip the correction
    np.testing.assert_allclose(model.transform(np.ones((1, 3))), np.full((1, 3), 3**-0.5))


def test_predict_checks_feature_count():
    X = np.random.default_rng(0).normal(size=(20, 3))
    model = GEM(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="X has 4 features, but GEM is expecting 3 features"):
        model.predict_proba(np.ones((2, 4)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree():
    X, _, _ = planted([300, 200, 100], d=32, kappa=60.0, seed=14)
    X = X.astype(np.float32)
    cpu = GEM(3, random_state=0, device="cpu").fit(X)
    gpu = GEM(3, random_state=0, device="cuda").fit(X)
    np.testing.assert_array_equal(cpu.labels_, gpu.labels_)
    np.testing.assert_allclose(cpu.mean_directions_, gpu.mean_directions_, atol=1e-4)
    np.testing.assert_allclose(cpu.predict_proba(X), gpu.predict_proba(X), atol=1e-4)
