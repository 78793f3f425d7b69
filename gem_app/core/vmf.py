"""von Mises-Fisher special functions, in float64, finite for d from 2 to 4096 and beyond.

METHOD.md sections 2 and 4: the vMF log-normaliser
``log C_d(kappa) = nu log kappa - (d/2) log(2 pi) - log I_nu(kappa)`` with
``nu = d/2 - 1``, the mean resultant length ``A_d = I_{d/2} / I_{d/2-1}`` and
its inverse.

``log I_nu`` comes from three sources, each used where it is accurate:

* ``scipy.special.ive`` for ``nu < 50`` (AMOS, relative error ~1e-15);
* the power series around 0 where ``ive`` underflows (``nu < 50``, tiny kappa);
* the uniform (Debye) asymptotic expansion, DLMF 10.41.3 with the terms
  ``U_1 .. U_4`` (A&S 9.3.9), for ``nu >= 50``; its relative error there is
  of order ``U_5 / nu**5 < 1e-9`` uniformly in kappa.

All of them compute the exponentially scaled ``log I_nu(k) - k``, so ratios
such as ``A_d`` never suffer from the cancellation of two numbers of size k.
"""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["log_bessel_iv", "log_normalizer", "mean_resultant", "solve_kappa"]

_DEBYE_MIN_ORDER = 50.0  # nu >= this: uniform asymptotic expansion
_IVE_SAFE_MIN = 1e-280  # ive below this is (near) underflow: use the series
_SERIES_TERMS = 40

# Debye polynomials u_k(p) of DLMF 10.41.10 / A&S 9.3.9: (powers of p, coefficients, divisor).
_DEBYE_POLYNOMIALS = (
    ((1, 3), (3.0, -5.0), 24.0),
    ((2, 4, 6), (81.0, -462.0, 385.0), 1152.0),
    ((3, 5, 7, 9), (30375.0, -369603.0, 765765.0, -425425.0), 414720.0),
    (
        (4, 6, 8, 10, 12),
        (4465125.0, -94121676.0, 349922430.0, -446185740.0, 185910725.0),
        39813120.0,
    ),
)


# --------------------------------------------------------------------------- special functions
def _checked_array(value, name: str, lower: float = -np.inf) -> np.ndarray:
    """``value`` as float64; ValueError naming the first entry that is not finite and >= lower."""
    arr = np.asarray(value, dtype=np.float64)
    bad = ~(np.isfinite(arr) & (arr >= lower))
    if bad.any():
        index = np.unravel_index(np.argmax(bad), arr.shape)
        where = f"{name}[{', '.join(map(str, index))}]" if arr.ndim else name
        raise ValueError(f"{where} = {float(arr[index])!r}; it must be finite and >= {lower}")
    return arr


def _debye_log_ive(nu: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    """``log I_nu(kappa) - kappa`` from DLMF 10.41.3 (terms up to ``U_4``), ``nu > 0``, ``kappa > 0``.

    With ``z = kappa/nu``, ``s = sqrt(1 + z^2)``, ``p = 1/s``:
    ``log I = nu*eta - log(2 pi nu)/2 - log(s)/2 + log(sum_k U_k(p) / nu^k)``,
    ``eta = s - asinh(1/z)``; ``nu*s - kappa = nu / (s + z)`` avoids cancellation.
    """
    z = kappa / nu
    s = np.hypot(1.0, z)
    p = 1.0 / s
    correction = np.zeros_like(z)
    for order, (powers, coefficients, divisor) in enumerate(_DEBYE_POLYNOMIALS, start=1):
        u_k = sum(c * p**k for k, c in zip(powers, coefficients, strict=True)) / divisor
        correction = correction + u_k / nu**order
    return (
        nu / (s + z)
        - nu * np.arcsinh(1.0 / z)
        - 0.5 * np.log(2.0 * np.pi * nu)
        - 0.5 * np.log(s)
        + np.log1p(correction)
    )


def _series_log_ive(nu: np.ndarray, kappa: np.ndarray, n_terms: int = _SERIES_TERMS) -> np.ndarray:
    """``log I_nu(kappa) - kappa`` from the power series (DLMF 10.25.2); for ``kappa^2/4 << nu + 1``.

    ``I_nu(k) = (k/2)^nu / Gamma(nu+1) * sum_j (k^2/4)^j / (j! (nu+1)_j)``.
    """
    quarter_square = 0.25 * kappa * kappa
    term = np.ones_like(kappa)
    total = np.ones_like(kappa)
    for j in range(1, n_terms):
        term = term * quarter_square / (j * (nu + j))
        total = total + term
    return nu * np.log(0.5 * kappa) - special.gammaln(nu + 1.0) + np.log(total) - kappa


def _log_ive(nu: np.ndarray, kappa: np.ndarray) -> np.ndarray:
    """``log I_nu(kappa) - kappa`` for broadcast float64 arrays, ``nu >= 0``, ``kappa > 0``."""
    nu, kappa = np.broadcast_arrays(nu, kappa)
    out = np.empty(nu.shape, dtype=np.float64)
    large = nu >= _DEBYE_MIN_ORDER
    if large.any():
        out[large] = _debye_log_ive(nu[large], kappa[large])
    small = ~large
    if small.any():
        scaled = special.ive(nu[small], kappa[small])
        safe = scaled > _IVE_SAFE_MIN
        values = np.empty(scaled.shape)
        with np.errstate(divide="ignore"):
            values[safe] = np.log(scaled[safe])
        values[~safe] = _series_log_ive(nu[small][~safe], kappa[small][~safe])
        out[small] = values
    return out


def log_bessel_iv(nu, kappa) -> np.ndarray:
    """Logarithm of the modified Bessel function of the first kind, ``log I_nu(kappa)``.

    Parameters
    ----------
    nu : array_like of float, ``nu >= 0``
        Order; broadcast against ``kappa``.
    kappa : array_like of float, ``kappa >= 0``
        Argument. ``kappa = 0`` gives ``0`` for ``nu = 0`` and ``-inf`` otherwise.

    Returns
    -------
    ndarray of float64, shape ``broadcast(nu, kappa)``
        Finite for every ``nu >= 0`` and ``kappa > 0`` representable in float64
        (relative error ~1e-10 or better; see the module docstring).
    """
    nu = _checked_array(nu, "nu", 0.0)
    kappa = _checked_array(kappa, "kappa", 0.0)
    nu, kappa = np.broadcast_arrays(nu, kappa)
    out = np.array(np.where(nu == 0.0, 0.0, -np.inf), dtype=np.float64)
    positive = kappa > 0.0
    out[positive] = _log_ive(nu[positive], kappa[positive]) + kappa[positive]
    return out


def _order_of_dimension(d) -> np.ndarray:
    return 0.5 * _checked_array(d, "d", 2.0) - 1.0


def log_normalizer(d, kappa) -> np.ndarray:
    """vMF log-normaliser ``log C_d(kappa) = nu log kappa - (d/2) log(2 pi) - log I_nu(kappa)``.

    Parameters
    ----------
    d : array_like of float, ``d >= 2``
        Ambient dimension (the sphere is ``S^{d-1}``); ``nu = d/2 - 1``.
    kappa : array_like of float, ``kappa >= 0``
        Concentration. ``kappa = 0`` returns the limit ``-log |S^{d-1}|``
        (the uniform density on the sphere).

    Returns
    -------
    ndarray of float64, shape ``broadcast(d, kappa)``
    """
    nu = _order_of_dimension(d)
    kappa = _checked_array(kappa, "kappa", 0.0)
    nu, kappa = np.broadcast_arrays(nu, kappa)
    half_d = nu + 1.0
    # kappa -> 0: nu log k - log I_nu(k) -> nu log 2 + lgamma(nu + 1).
    out = np.array(nu * np.log(2.0) + special.gammaln(half_d) - half_d * np.log(2.0 * np.pi))
    positive = kappa > 0.0
    k = kappa[positive]
    n = nu[positive]
    out[positive] = n * np.log(k) - half_d[positive] * np.log(2.0 * np.pi) - _log_ive(n, k) - k
    return out


def mean_resultant(d, kappa) -> np.ndarray:
    """Mean resultant length of a vMF, ``A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa)``.

    Parameters
    ----------
    d : array_like of float, ``d >= 2``
    kappa : array_like of float, ``kappa >= 0``

    Returns
    -------
    ndarray of float64, shape ``broadcast(d, kappa)``
        Values in ``[0, 1)``: ``A_d(0) = 0``, ``A_d(k) ~ k/d`` for small k and
        ``1 - A_d(k) ~ (d-1)/(2k)`` for large k.
    """
    nu = _order_of_dimension(d)
    kappa = _checked_array(kappa, "kappa", 0.0)
    nu, kappa = np.broadcast_arrays(nu, kappa)
    out = np.zeros(nu.shape, dtype=np.float64)
    positive = kappa > 0.0
    n, k = nu[positive], kappa[positive]
    out[positive] = np.exp(_log_ive(n + 1.0, k) - _log_ive(n, k))
    return out


def _banerjee_start(d: np.ndarray, rbar: np.ndarray) -> np.ndarray:
    """Banerjee et al. (2005) approximation ``rbar (d - rbar^2) / (1 - rbar^2)``."""
    return rbar * (d - rbar * rbar) / (1.0 - rbar * rbar)


def solve_kappa(
    d, rbar, *, kappa_min: float = 1e-3, kappa_max: float = 1e5, rtol: float = 1e-13
) -> np.ndarray:
    """Concentration ``kappa`` with ``A_d(kappa) = rbar``, clamped to ``[kappa_min, kappa_max]``.

    Safeguarded Newton iteration from Banerjee's start, with
    ``A'(k) = 1 - A^2 - (d-1) A / k``; a step that leaves the current bracket
    (or meets a non-positive derivative) is replaced by a geometric bisection,
    so the iteration always converges. It stops when the relative Newton step
    is below ``rtol`` (or the bracket is that narrow).

    Parameters
    ----------
    d : array_like of float, ``d >= 2``
    rbar : array_like of float
        Mean resultant lengths; ``rbar <= A_d(kappa_min)`` (in particular
        ``rbar <= 0``) gives ``kappa_min``, ``rbar >= A_d(kappa_max)`` (in
        particular ``rbar >= 1``) gives ``kappa_max``.
    kappa_min, kappa_max : float, ``0 < kappa_min < kappa_max``
    rtol : float
        Relative tolerance on kappa.

    Returns
    -------
    ndarray of float64, shape ``broadcast(d, rbar)``
        Never NaN.
    """
    if not (0.0 < kappa_min < kappa_max < np.inf):
        raise ValueError(
            f"need 0 < kappa_min < kappa_max < inf, got kappa_min={kappa_min!r}, "
            f"kappa_max={kappa_max!r}"
        )
    d = _checked_array(d, "d", 2.0)
    rbar = _checked_array(rbar, "rbar")
    d, rbar = np.broadcast_arrays(d, rbar)
    a_min, a_max = mean_resultant(d, kappa_min), mean_resultant(d, kappa_max)
    kappa = np.where(rbar <= a_min, kappa_min, kappa_max)
    active = (rbar > a_min) & (rbar < a_max)
    if not active.any():
        return kappa
    d_a, r_a = d[active], rbar[active]
    k = np.clip(_banerjee_start(d_a, r_a), kappa_min, kappa_max)
    lo = np.full_like(k, kappa_min)
    hi = np.full_like(k, kappa_max)
    done = np.zeros(k.shape, dtype=bool)
    for _ in range(200):
        todo = ~done
        kt, dt = k[todo], d_a[todo]
        a = mean_resultant(dt, kt)
        f = a - r_a[todo]
        lo[todo] = np.where(f < 0.0, kt, lo[todo])
        hi[todo] = np.where(f > 0.0, kt, hi[todo])
        slope = 1.0 - a * a - (dt - 1.0) * a / kt
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = kt - f / slope
        inside = (slope > 0.0) & (newton > lo[todo]) & (newton < hi[todo])
        step = np.where(inside, newton, np.sqrt(lo[todo] * hi[todo]))
        finished = (
            (f == 0.0)
            | (inside & (np.abs(newton - kt) <= rtol * kt))
            | (hi[todo] - lo[todo] <= rtol * lo[todo])
        )
        k[todo] = np.where(f == 0.0, kt, step)
        done[todo] = finished
        if done.all():
            break
    kappa[active] = np.clip(k, kappa_min, kappa_max)
    return kappa
