"""Tests for gem_app.core.vmf: the vMF special functions.

References are independent of the implementation: mpmath at 40 digits (the
power series ``besseli`` or, where that is slow, the integral representation),
closed forms for d = 3, and scipy's ``ive``.
"""

from __future__ import annotations

import functools
import math

import mpmath as mp
import numpy as np
import pytest
from scipy import special
from scipy.stats import vonmises_fisher

from gem_app.core.vmf import log_bessel_iv, log_normalizer, mean_resultant, solve_kappa

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
