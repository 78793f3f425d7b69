"""Tests for gem_app.sphere: vMF special functions and the SphereTransform.

References are independent of the implementation: mpmath at 40 digits (the
power series ``besseli`` or, where that is slow, the integral representation),
closed forms for d = 3, scipy's ``ive``, sklearn's PCA, and plain numpy
re-implementations of the transform written here.
"""

from __future__ import annotations

import functools
import json
import math

import mpmath as mp
import numpy as np
import pytest
import torch
from scipy import special
from scipy.stats import vonmises_fisher
from sklearn.base import clone
from sklearn.decomposition import PCA

from gem_app import sphere
from gem_app.sphere import (
    SphereTransform,
    find_invalid_rows,
    log_bessel_iv,
    log_normalizer,
    mean_resultant,
    solve_kappa,
)

DIMENSIONS = [2, 3, 16, 100, 101, 384, 1024, 4096]
KAPPAS = np.geomspace(1e-3, 1e5, 8).tolist()


# ----------------------------------------------------------------------------- mpmath reference
@functools.cache
def mp_log_iv(nu: float, kappa: float) -> float:
    """log I_nu(kappa) at 40 digits.

    ``besseli`` sums the power series, which needs ~kappa terms; for huge
    order and argument we use instead the integral (DLMF 10.32.3, integer nu)
    ``I_n(k) = (1/pi) int_0^pi exp(k cos t) cos(n t) dt``, scaled by exp(-k).
    """
    with mp.workdps(40):
        k = mp.mpf(kappa)
        if kappa >= 5e4 and nu > 1000:
            assert float(nu).is_integer()
            points = mp.linspace(0, 0.1, 41) + [mp.mpf("0.5"), mp.pi]
            integral = mp.quad(lambda t: mp.exp(k * (mp.cos(t) - 1)) * mp.cos(nu * t), points)
            return float(mp.log(integral / mp.pi) + k)
        return float(mp.log(mp.besseli(mp.mpf(nu), k)))


def test_integral_reference_agrees_with_series_reference():
    nu, kappa = 1500.0, 5e4  # both methods are usable here
    with mp.workdps(40):
        series = float(mp.log(mp.besseli(nu, kappa)))
    assert mp_log_iv(nu, kappa) == pytest.approx(series, rel=1e-14)


def _relative_error(value, reference):
    return abs(value - reference) / max(1.0, abs(reference))


# ----------------------------------------------------------------------------- special functions
@pytest.mark.parametrize("d", DIMENSIONS)
def test_log_bessel_iv_and_log_normalizer_match_mpmath(d):
    nu = d / 2 - 1
    for kappa in KAPPAS:
        reference = mp_log_iv(nu, kappa)
        assert _relative_error(float(log_bessel_iv(nu, kappa)), reference) < 1e-10, kappa
        log_c = nu * math.log(kappa) - (d / 2) * math.log(2 * math.pi) - reference
        # relative error, absolute where log C_d is of order 1 or smaller
        assert _relative_error(float(log_normalizer(d, kappa)), log_c) < 1e-6, kappa


@pytest.mark.parametrize("d", DIMENSIONS)
def test_mean_resultant_matches_mpmath(d):
    nu = d / 2 - 1
    for kappa in KAPPAS:
        reference = math.exp(mp_log_iv(nu + 1, kappa) - mp_log_iv(nu, kappa))
        assert float(mean_resultant(d, kappa)) == pytest.approx(reference, rel=1e-6), kappa


def test_log_bessel_iv_matches_scipy_where_scipy_is_accurate():
    # Orders on both sides of the switch to the Debye expansion (nu = 50).
    nu = np.array([0.0, 0.5, 1.0, 7.5, 49.0, 50.0, 59.0, 99.5, 191.0])[:, None]
    kappa = np.geomspace(1e-3, 1e5, 41)[None, :]
    scaled = special.ive(nu, kappa)
    usable = scaled > 1e-250  # no underflow: scipy's value is accurate
    assert usable.sum() > 250
    reference = np.log(np.where(usable, scaled, 1.0)) + kappa
    ours = log_bessel_iv(nu, kappa)
    assert ours.shape == (9, 41)
    error = np.abs(ours - reference) / np.maximum(1.0, np.abs(reference))
    assert error[usable].max() < 1e-10


def test_closed_forms_in_three_dimensions():
    # d = 3: C_3(k) = k / (4 pi sinh k), A_3(k) = coth k - 1/k.
    kappa = np.geomspace(1e-3, 1e5, 30)
    log_sinh = kappa + np.log1p(-np.exp(-2 * kappa)) - math.log(2)
    expected = np.log(kappa) - math.log(4 * math.pi) - log_sinh
    np.testing.assert_allclose(log_normalizer(3, kappa), expected, rtol=1e-12, atol=1e-12)
    with mp.workdps(40):
        langevin = [float(mp.coth(k) - 1 / mp.mpf(k)) for k in kappa]
    np.testing.assert_allclose(mean_resultant(3, kappa), langevin, rtol=1e-10)
    # d = 2 order 1/2: I_{1/2}(k) = sqrt(2 / (pi k)) sinh k
    np.testing.assert_allclose(
        log_bessel_iv(0.5, kappa), 0.5 * np.log(2 / (math.pi * kappa)) + log_sinh, rtol=1e-12
    )


def test_finite_and_monotone_for_every_dimension_up_to_4096():
    d = np.arange(2, 4097)[:, None]
    kappa = np.geomspace(1e-3, 1e5, 41)[None, :]
    log_c = log_normalizer(d, kappa)
    a = mean_resultant(d, kappa)
    log_iv = log_bessel_iv(d / 2 - 1, kappa)
    assert np.isfinite(log_c).all() and np.isfinite(log_iv).all()
    assert ((a > 0) & (a < 1)).all()
    assert (np.diff(a, axis=1) > 0).all()  # A_d increases with kappa
    assert (np.diff(a, axis=0) < 0).all()  # and decreases with d
    assert (np.diff(log_iv, axis=0) < 0).all()  # I_nu decreases with nu
    # Far beyond the working range, still finite.
    assert np.isfinite(log_normalizer(4096, [1e-12, 1e9])).all()
    assert np.isfinite(log_bessel_iv([0.0, 30.0, 2047.0], 1e-200)).all()


def test_small_and_zero_kappa_limits():
    d = np.array([2.0, 3.0, 384.0, 4096.0])
    minus_log_area = special.gammaln(d / 2) - math.log(2) - (d / 2) * math.log(math.pi)
    np.testing.assert_allclose(log_normalizer(d, 0.0), minus_log_area, rtol=1e-14)
    np.testing.assert_allclose(log_normalizer(d, 1e-9), minus_log_area, rtol=1e-12)
    np.testing.assert_allclose(mean_resultant(d, 1e-6), 1e-6 / d, rtol=1e-9)
    assert (mean_resultant(d, 0.0) == 0).all()
    assert log_bessel_iv(0, 0) == 0 and log_bessel_iv(2, 0) == -np.inf


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: log_bessel_iv(-1, 1.0), "nu = -1.0"),
        (lambda: log_bessel_iv(1, [1.0, -2.0]), r"kappa\[1\] = -2.0"),
        (lambda: log_normalizer(1, 1.0), "d = 1.0"),
        (lambda: mean_resultant(3, [1.0, np.nan]), r"kappa\[1\] = nan"),
        (lambda: solve_kappa(3, [[0.5, np.inf]]), r"rbar\[0, 1\] = inf"),
        (lambda: solve_kappa(3, 0.5, kappa_min=2.0, kappa_max=1.0), "kappa_min"),
    ],
)
def test_special_functions_reject_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------- solve_kappa
@pytest.mark.parametrize("d", [2, 3, 16, 384, 1024, 4096])
def test_solve_kappa_inverts_mean_resultant(d):
    kappa = np.geomspace(1e-3, 1e5, 60)
    rbar = mean_resultant(d, kappa)
    solved = solve_kappa(d, rbar)
    np.testing.assert_allclose(solved, kappa, rtol=1e-8)
    np.testing.assert_allclose(mean_resultant(d, solved), rbar, rtol=1e-11)


def test_solve_kappa_broadcasts_and_clamps():
    d = np.array([[3.0], [384.0]])
    rbar = np.array([-0.5, 0.0, 1e-12, 0.5, 1.0, 2.0])
    kappa = solve_kappa(d, rbar)
    assert kappa.shape == (2, 6) and np.isfinite(kappa).all()
    assert (kappa[:, :3] == 1e-3).all() and (kappa[:, 4:] == 1e5).all()
    np.testing.assert_allclose(mean_resultant(d[:, 0], kappa[:, 3]), 0.5, rtol=1e-13)
    narrow = solve_kappa(16, [0.01, 0.5, 0.99], kappa_min=1.0, kappa_max=100.0)
    assert narrow[0] == 1.0 and narrow[2] == 100.0
    assert float(mean_resultant(16, narrow[1])) == pytest.approx(0.5, rel=1e-13)
    assert float(solve_kappa(3, 0.3)) == pytest.approx(float(solve_kappa([3], [0.3])[0]))


def test_solve_kappa_recovers_concentration_of_vmf_sample():
    d, kappa = 384, 500.0
    mu = np.zeros(d)
    mu[0] = 1.0
    sample = vonmises_fisher.rvs(mu, kappa, size=20_000, random_state=7)
    rbar = np.linalg.norm(sample.mean(axis=0))
    assert float(solve_kappa(d, rbar)) == pytest.approx(kappa, rel=0.01)


# ----------------------------------------------------------------------------- invalid rows
def test_find_invalid_rows_numpy_torch_and_across_chunks(monkeypatch):
    X = np.ones((12, 3))
    X[2, 1] = np.nan
    X[5] = 0.0
    X[9, 0] = -np.inf
    X[10, :] = [np.nan, np.inf, 0.0]
    expected = {2: "contains NaN", 5: "zero vector", 9: "contains Inf", 10: "contains NaN"}
    assert find_invalid_rows(X) == expected
    assert find_invalid_rows(torch.from_numpy(X).float()) == expected
    monkeypatch.setattr(sphere, "_CHUNK_ELEMENTS", 7)  # two rows per chunk
    assert find_invalid_rows(X) == expected
    integers = np.array([[1, 2], [0, 0], [3, 0]])
    assert find_invalid_rows(integers) == {1: "zero vector"}
    assert find_invalid_rows(np.ones((4, 2), dtype=np.float16)) == {}
    with pytest.raises(ValueError, match="2-D"):
        find_invalid_rows(np.ones(3))


# ----------------------------------------------------------------------------- SphereTransform
def _unit(rows):
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _anisotropic(n=3000, d=8, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.geomspace(0.05, 1.0, d)
    return rng.normal(size=(n, d)) * scales + np.r_[4.0, np.zeros(d - 1)]


def test_hand_computed_small_example_with_weights():
    X = np.array([[3.0, 4.0], [0.0, 2.0], [-5.0, 0.0]])
    weights = np.array([1.0, 2.0, 3.0])
    # u = (0.6, 0.8), (0, 1), (-1, 0)
    m = np.array([(0.6 - 3.0) / 6.0, (0.8 + 2.0) / 6.0])  # (-0.4, 0.4667)
    model = SphereTransform().fit(X, sample_weight=weights)
    np.testing.assert_allclose(model.mean_, m, rtol=1e-15)
    assert model.anisotropy_ == pytest.approx(math.hypot(-0.4, 2.8 / 6.0), rel=1e-15)
    u = np.array([[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(model.transform(X), _unit(u - m), rtol=1e-14)
    unweighted = SphereTransform().fit(X)
    np.testing.assert_allclose(unweighted.mean_, u.mean(axis=0), rtol=1e-15)
    assert unweighted.n_features_in_ == 2 and unweighted.whitening_ is None
    plain = SphereTransform(center=False).fit(X)
    np.testing.assert_allclose(plain.transform(X), u, rtol=1e-15)


def test_integer_weights_equal_repeated_rows():
    X = _anisotropic(n=50, d=5, seed=1)
    counts = np.random.default_rng(2).integers(1, 4, size=50)
    weighted = SphereTransform(whiten=True).fit(X, sample_weight=counts)
    repeated = SphereTransform(whiten=True).fit(np.repeat(X, counts, axis=0))
    np.testing.assert_allclose(weighted.mean_, repeated.mean_, rtol=1e-12)
    np.testing.assert_allclose(weighted.whitening_, repeated.whitening_, rtol=1e-9)


def test_centering_removes_anisotropy_and_outputs_are_unit():
    X = _anisotropic().astype(np.float32)
    model = SphereTransform().fit(X)
    assert model.anisotropy_ > 0.9
    Y = model.transform(X)
    assert Y.dtype == np.float32 and Y.shape == X.shape
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, atol=1e-6)
    assert SphereTransform().fit(Y).anisotropy_ < 0.05
    assert SphereTransform(center=False).fit(X).anisotropy_ == pytest.approx(model.anisotropy_)


def test_transform_of_new_rows_uses_stored_mean():
    X = _anisotropic(n=400, seed=3)
    new = _anisotropic(n=30, seed=4) + 1.0
    model = SphereTransform().fit(X)
    expected = _unit(_unit(new) - model.mean_)
    np.testing.assert_allclose(model.transform(new), expected, rtol=1e-12, atol=1e-15)
    assert not np.allclose(model.transform(new), SphereTransform().fit_transform(new))


def test_numpy_and_torch_agree_and_keep_dtypes():
    X = _anisotropic(n=300, d=6, seed=5)
    model = SphereTransform(whiten=True).fit(X)
    from_torch = SphereTransform(whiten=True).fit(torch.from_numpy(X))
    np.testing.assert_allclose(from_torch.mean_, model.mean_, rtol=1e-14)
    np.testing.assert_allclose(from_torch.whitening_, model.whitening_, rtol=1e-10)
    weights = np.linspace(0.5, 3.0, len(X))
    np.testing.assert_allclose(
        SphereTransform().fit(torch.from_numpy(X), sample_weight=torch.from_numpy(weights)).mean_,
        SphereTransform().fit(X, sample_weight=weights).mean_,
        rtol=1e-14,
    )
    X32 = X.astype(np.float32)
    np.testing.assert_array_equal(
        model.transform(torch.from_numpy(X32)).numpy(), model.transform(X32)
    )
    out64 = model.transform(torch.from_numpy(X))
    assert isinstance(out64, torch.Tensor) and out64.dtype == torch.float64
    np.testing.assert_allclose(out64.numpy(), model.transform(X), rtol=1e-13)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        out = model.transform(torch.from_numpy(X).to(dtype))
        assert out.dtype == torch.float32 and out.device == torch.device("cpu")
    assert model.transform(X.astype(np.float16)).dtype == np.float32
    assert model.transform(np.round(X * 10).astype(np.int64)).dtype == np.float64
    assert model.transform(X.tolist()).dtype == np.float64
    requires_grad = torch.from_numpy(X).requires_grad_(True)
    assert not model.transform(requires_grad).requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensor_stays_on_device():
    X = _anisotropic(n=500, seed=6)
    model = SphereTransform().fit(torch.from_numpy(X).cuda().half())
    out = model.transform(torch.from_numpy(X).cuda().half())
    assert out.is_cuda and out.dtype == torch.float32
    reference = SphereTransform().fit(X.astype(np.float16))
    np.testing.assert_allclose(
        out.cpu().numpy(), reference.transform(X.astype(np.float16)), atol=1e-6
    )


def test_chunked_statistics_equal_single_chunk(monkeypatch):
    X = _anisotropic(n=101, d=7, seed=8)
    weights = np.random.default_rng(9).uniform(0.5, 2.0, size=101)
    whole = SphereTransform(whiten=True).fit(X, sample_weight=weights)
    monkeypatch.setattr(sphere, "_CHUNK_ELEMENTS", 50)  # 7 rows per chunk
    seen_rows = []
    original_unit_rows = sphere._unit_rows

    def recording_unit_rows(chunk):
        seen_rows.append(chunk.shape[0])
        return original_unit_rows(chunk)

    monkeypatch.setattr(sphere, "_unit_rows", recording_unit_rows)
    chunked = SphereTransform(whiten=True).fit(X, sample_weight=weights)
    np.testing.assert_allclose(chunked.mean_, whole.mean_, rtol=1e-13)
    np.testing.assert_allclose(chunked.whitening_, whole.whitening_, rtol=1e-10)
    np.testing.assert_allclose(chunked.transform(X), whole.transform(X), rtol=1e-12)
    # float64 work happens 7 rows at a time: fit (2 passes) and two transforms, 15 chunks each
    assert max(seen_rows) == 7 and sum(seen_rows) == 4 * 101 and len(seen_rows) == 60


def test_whitening_gives_identity_covariance_and_matches_pca():
    X = _anisotropic(n=3000, seed=10)
    model = SphereTransform(whiten=True).fit(X)
    u = _unit(X)
    z = (u - model.mean_) @ model.whitening_
    np.testing.assert_allclose(z.T @ z / len(z), np.eye(8), atol=1e-9)
    Y = model.transform(X)
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, rtol=1e-14)
    # ZCA and PCA whitening differ by a rotation, so the normalised outputs have equal Gram matrices.
    pca_directions = _unit(PCA(whiten=True).fit_transform(u))
    np.testing.assert_allclose(
        Y[:200] @ Y[:200].T, pca_directions[:200] @ pca_directions[:200].T, atol=1e-9
    )
    # On the sphere, the spread of variances over directions becomes nearly flat.
    whitened = np.linalg.eigvalsh(np.cov(Y.T))
    plain = np.linalg.eigvalsh(np.cov(SphereTransform().fit_transform(X).T))
    assert whitened.max() / whitened.min() < 1.5 < 10 < plain.max() / plain.min()


def test_whitening_floor_keeps_degenerate_directions_bounded():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 10)) + 5.0  # rank 3 in d = 10
    model = SphereTransform(whiten=True).fit(X)
    eigenvalues = np.linalg.eigvalsh(np.cov(_unit(X).T, bias=True))
    floor = 1e-3 * eigenvalues.clip(0).mean()
    assert np.isfinite(model.whitening_).all()
    assert np.linalg.norm(model.whitening_, 2) == pytest.approx(1 / math.sqrt(floor), rel=1e-6)
    assert np.isfinite(model.transform(rng.normal(size=(5, 10)))).all()


def test_row_equal_to_mean_falls_back_to_unit_vector():
    X = np.tile([[2.0, 0.0, 0.0]], (4, 1))  # R0 = 1: every u_i equals m
    model = SphereTransform().fit(X)
    assert model.anisotropy_ == pytest.approx(1.0)
    np.testing.assert_array_equal(model.transform(X), _unit(X))
    half = math.sqrt(0.5)
    np.testing.assert_allclose(
        model.transform([[1.0, 1.0, 0.0]]), _unit([[half - 1, half, 0]]), rtol=1e-14
    )
    np.testing.assert_array_equal(SphereTransform(whiten=True).fit_transform(X), _unit(X))


def test_state_round_trip_through_json():
    X = _anisotropic(n=200, d=4, seed=12)
    for whiten in (False, True):
        model = SphereTransform(whiten=whiten).fit(X)
        state = model.get_state()
        assert set(state) >= {"center", "whiten", "mean_", "anisotropy_", "whitening_"}
        assert state["mean_"].dtype == np.float64 and state["anisotropy_"] == model.anisotropy_
        as_json = json.loads(
            json.dumps(
                {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in state.items()}
            )
        )
        for restored in (SphereTransform.from_state(state), SphereTransform.from_state(as_json)):
            np.testing.assert_array_equal(restored.transform(X), model.transform(X))
            assert restored.get_params() == model.get_params()
    with pytest.raises(ValueError, match="mean_"):
        SphereTransform.from_state({**state, "mean_": [np.nan, 1.0, 0.0, 0.0]})
    with pytest.raises(ValueError, match="whitening_"):
        SphereTransform.from_state({**state, "whitening_": np.eye(3)})
    with pytest.raises(ValueError, match="missing"):
        SphereTransform.from_state({"center": True})


def test_sklearn_conventions():
    model = SphereTransform(center=False, whiten=True, eps=1e-10)
    assert clone(model).get_params() == {"center": False, "whiten": True, "eps": 1e-10}
    assert not hasattr(model, "mean_")
    X = _anisotropic(n=20, d=3)
    assert model.fit(X) is model
    with pytest.raises(ValueError, match="not fitted"):
        SphereTransform().transform(X)
    with pytest.raises(ValueError, match="center"):
        SphereTransform(center="yes").fit(X)


@pytest.mark.parametrize(
    ("X", "weights", "message"),
    [
        (np.ones((5, 1)), None, "d >= 2"),
        (np.ones(5), None, "2-D"),
        (np.ones((0, 3)), None, "no rows"),
        (
            np.array([[1.0, 2.0], [0.0, 0.0], [np.nan, 1.0], [1.0, np.inf]]),
            None,
            r"3 row\(s\).*row 1 \(zero vector\), row 2 \(contains NaN\), row 3 \(contains Inf\)",
        ),
        (np.ones((3, 2)), np.ones(4), r"shape \(3,\)"),
        (np.ones((3, 2)), [1.0, 0.0, 1.0], r"sample_weight\[1\] = 0.0"),
        (np.ones((3, 2)), [1.0, 1.0, np.nan], r"sample_weight\[2\] = nan"),
        (np.array([["a", "b"]]), None, "dtype"),
    ],
)
def test_fit_rejects_bad_input(X, weights, message):
    with pytest.raises(ValueError, match=message):
        SphereTransform().fit(X, sample_weight=weights)


def test_transform_rejects_wrong_dimension_and_invalid_rows():
    model = SphereTransform().fit(_anisotropic(n=20, d=4))
    with pytest.raises(ValueError, match="3 features .* fitted on 4"):
        model.transform(np.ones((2, 3)))
    bad = np.ones((8, 4))
    bad[6, 2] = np.nan
    with pytest.raises(ValueError, match=r"row 6 \(contains NaN\)"):
        model.transform(torch.from_numpy(bad))
    many = np.zeros((9, 4))
    with pytest.raises(ValueError, match=r"9 row\(s\).*and 4 more"):
        model.transform(many)
