"""Points on the unit hypersphere and the von Mises-Fisher special functions.

METHOD.md section 1: embeddings ``e_i`` become unit vectors ``u_i``, the
(weighted) mean resultant ``m`` is removed and the result is normalised again,
``x_i = normalize(u_i - m)``; ``R0 = ||m||`` measures the anisotropy.

METHOD.md sections 2 and 4: the vMF log-normaliser
``log C_d(kappa) = nu log kappa - (d/2) log(2 pi) - log I_nu(kappa)`` with
``nu = d/2 - 1``, the mean resultant length ``A_d = I_{d/2} / I_{d/2-1}`` and
its inverse, all in float64 and finite for ``d`` up to 4096 and beyond.

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
import torch
from scipy import special
from sklearn.base import BaseEstimator

__all__ = [
    "log_bessel_iv",
    "log_normalizer",
    "mean_resultant",
    "solve_kappa",
    "find_invalid_rows",
    "SphereTransform",
]

_DEBYE_MIN_ORDER = 50.0  # nu >= this: uniform asymptotic expansion
_IVE_SAFE_MIN = 1e-280  # ive below this is (near) underflow: use the series
_SERIES_TERMS = 40
_CHUNK_ELEMENTS = 1 << 22  # ~32 MiB of float64 per chunk
_EIGENVALUE_FLOOR = 1e-3  # whitening floor, relative to the mean eigenvalue
_STATE_VERSION = 1

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


# --------------------------------------------------------------------------- rows of X
def _as_matrix(X, name: str = "X"):
    """``X`` as a 2-D numpy array or detached torch tensor (no copy when already one)."""
    if isinstance(X, torch.Tensor):
        arr = X.detach()
        if arr.is_complex():
            raise ValueError(f"{name} has complex dtype {arr.dtype}; real embeddings are needed")
    else:
        arr = X if isinstance(X, np.ndarray) else np.asarray(X)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} has dtype {arr.dtype}; a real numeric array is needed")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows x features), got shape {tuple(arr.shape)}")
    return arr


def _row_chunks(n_rows: int, n_features: int):
    step = max(1, _CHUNK_ELEMENTS // max(n_features, 1))
    for start in range(0, n_rows, step):
        yield start, min(start + step, n_rows)


def _invalid_in_chunk(chunk, offset: int) -> dict[int, str]:
    """Rows of one chunk (numpy or torch) with NaN, Inf or all zeros, keyed by global row."""
    xp_isnan, xp_isinf = (
        (torch.isnan, torch.isinf) if torch.is_tensor(chunk) else (np.isnan, np.isinf)
    )
    floating = chunk.is_floating_point() if torch.is_tensor(chunk) else chunk.dtype.kind == "f"
    reasons: dict[int, str] = {}
    checks = [("zero vector", (chunk == 0).all(1))]
    if floating:
        checks = [
            ("contains NaN", xp_isnan(chunk).any(1)),
            ("contains Inf", xp_isinf(chunk).any(1)),
        ] + checks
    for reason, mask in checks:
        mask = mask.cpu().numpy() if torch.is_tensor(mask) else mask
        for row in np.flatnonzero(mask):
            reasons.setdefault(offset + int(row), reason)
    return dict(sorted(reasons.items()))


def find_invalid_rows(X) -> dict[int, str]:
    """Rows of ``X`` that cannot be put on the unit sphere.

    Parameters
    ----------
    X : ndarray or torch.Tensor, shape (N, d)

    Returns
    -------
    dict of int to str
        ``{row: reason}`` in row order; reasons are ``"contains NaN"``,
        ``"contains Inf"`` and ``"zero vector"`` (the first that applies).
        ``X`` is scanned in row chunks, without a full copy.
    """
    arr = _as_matrix(X)
    invalid: dict[int, str] = {}
    for start, stop in _row_chunks(arr.shape[0], arr.shape[1]):
        invalid.update(_invalid_in_chunk(arr[start:stop], start))
    return invalid


def _describe_invalid(invalid: dict[int, str], name: str = "X", shown: int = 5) -> str:
    items = list(invalid.items())
    listed = ", ".join(f"row {row} ({reason})" for row, reason in items[:shown])
    more = f", ... and {len(items) - shown} more" if len(items) > shown else ""
    return (
        f"{name} has {len(items)} row(s) that cannot be put on the unit sphere: "
        f"{listed}{more}. Remove or repair them first."
    )


def _unit_rows(chunk: torch.Tensor) -> torch.Tensor:
    """Rows divided by their Euclidean norm (float64; scaled first so nothing over/underflows)."""
    scaled = chunk / chunk.abs().amax(dim=1, keepdim=True)
    return scaled / torch.linalg.vector_norm(scaled, dim=1, keepdim=True)


def _zca_whitening(covariance: np.ndarray, floor: float = _EIGENVALUE_FLOOR) -> np.ndarray:
    """Symmetric (ZCA) map ``C^{-1/2}`` with eigenvalues floored at ``floor * mean eigenvalue``.

    Parameters
    ----------
    covariance : ndarray, shape (d, d), symmetric positive semi-definite

    Returns
    -------
    ndarray, shape (d, d)
    """
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    lowest = max(floor * float(np.mean(np.clip(eigenvalues, 0.0, None))), 1e-300)
    inv_sqrt = 1.0 / np.sqrt(np.maximum(eigenvalues, lowest))
    return (eigenvectors * inv_sqrt) @ eigenvectors.T


def _compute_device(arr) -> torch.device:
    """Where float64 statistics are computed: X's own device (CPU for numpy and for MPS)."""
    if torch.is_tensor(arr) and arr.device.type != "mps":
        return arr.device
    return torch.device("cpu")


def _float64_chunks(arr, device: torch.device):
    """Yield ``(start, stop, original_chunk, float64 torch chunk on device)`` over row chunks."""
    for start, stop in _row_chunks(arr.shape[0], arr.shape[1]):
        chunk = arr[start:stop]
        if torch.is_tensor(chunk):
            as64 = chunk.to(device=device, dtype=torch.float64, copy=True)
        else:
            as64 = torch.from_numpy(np.array(chunk, dtype=np.float64))
        yield start, stop, chunk, as64


def _output_dtype(arr) -> torch.dtype:
    """float64 for float64 (and integer/bool) input, float32 for narrower floats."""
    if torch.is_tensor(arr):
        narrow = arr.is_floating_point() and arr.dtype != torch.float64
    else:
        narrow = arr.dtype.kind == "f" and arr.dtype != np.float64
    return torch.float32 if narrow else torch.float64


def _validated_weights(sample_weight, n_rows: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    if torch.is_tensor(sample_weight):
        sample_weight = sample_weight.detach().cpu().numpy()
    weights = np.asarray(sample_weight)
    if weights.shape != (n_rows,):
        raise ValueError(
            f"sample_weight must have shape ({n_rows},) (one weight per row of X), "
            f"got shape {weights.shape}"
        )
    if weights.dtype.kind not in "biuf":
        raise ValueError(f"sample_weight has dtype {weights.dtype}; numbers are needed")
    weights = weights.astype(np.float64)
    bad = np.flatnonzero(~(np.isfinite(weights) & (weights > 0.0)))
    if bad.size:
        row = int(bad[0])
        raise ValueError(
            f"sample_weight[{row}] = {float(weights[row])!r}: weights must be finite and > 0 "
            f"({bad.size} bad weight(s) in total)"
        )
    return weights


class SphereTransform(BaseEstimator):
    """Map embeddings to unit vectors with the anisotropy (mean resultant) removed.

    ``u_i = e_i / ||e_i||``; ``m = sum_i a_i u_i / sum_i a_i`` (``a`` = sample
    weights, default 1); ``R0 = ||m||`` is the anisotropy. Output rows are
    ``x_i = normalize(u_i - m)`` (``center=True``) or ``x_i = u_i``.
    With ``whiten=True`` the centred vectors are first multiplied by the ZCA map
    ``C^{-1/2}`` of their weighted covariance ``C`` (eigenvalues floored at
    1e-3 times the mean eigenvalue, so that degenerate directions are not
    blown up); with ``center=False`` ``C`` is the second moment of the ``u_i``.

    A row whose centred vector is numerically zero (``||u_i - m||^2 <= eps``,
    i.e. the point equals ``m``) has no direction; it falls back to ``u_i``.

    Parameters
    ----------
    center : bool, default True
        Subtract the mean resultant ``m`` before normalising.
    whiten : bool, default False
        Apply ZCA whitening to the (centred) unit vectors before normalising.
    eps : float, default 1e-12
        Squared-norm threshold under which a centred vector counts as zero.

    Attributes
    ----------
    mean_ : ndarray of shape (d,), float64
        Weighted mean resultant ``m`` of the unit vectors.
    anisotropy_ : float
        ``R0 = ||m||`` in ``[0, 1]``; near 1 when all embeddings share a cone.
    whitening_ : ndarray of shape (d, d) or None
        The symmetric whitening matrix, ``None`` unless ``whiten=True``.
    n_features_in_ : int
        ``d``.

    Notes
    -----
    ``fit`` and ``transform`` accept numpy arrays and torch tensors (any
    device). Statistics are accumulated in float64 over row chunks, so no
    full-size float64 copy of ``X`` is ever made. ``transform`` returns the
    same kind of array on the same device: float64 for float64 (and integer)
    input, float32 for float32/float16/bfloat16 input.
    """

    def __init__(self, *, center: bool = True, whiten: bool = False, eps: float = 1e-12):
        self.center = center
        self.whiten = whiten
        self.eps = eps

    # ------------------------------------------------------------------ fitting
    def _check_params(self) -> None:
        for name in ("center", "whiten"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not (isinstance(self.eps, (int, float)) and 0.0 <= self.eps < 1.0):
            raise ValueError(f"eps must be a number in [0, 1), got {self.eps!r}")

    def fit(self, X, sample_weight=None) -> SphereTransform:
        """Estimate the mean resultant (and the whitening map) from ``X``.

        Parameters
        ----------
        X : ndarray or torch.Tensor, shape (N, d)
            Embeddings, ``N >= 1``, ``d >= 2``; no NaN/Inf/all-zero rows.
        sample_weight : array_like of shape (N,), optional
            Masses ``a_i > 0`` (e.g. tokens per document); default 1.

        Returns
        -------
        self
        """
        self._check_params()
        arr = _as_matrix(X)
        n_rows, n_features = arr.shape
        if n_features < 2:
            raise ValueError(
                f"X has {n_features} feature(s); putting rows on the unit sphere needs d >= 2 "
                "(for d = 1 every unit vector is +1 or -1, so no direction is left)"
            )
        if n_rows < 1:
            raise ValueError("X has no rows; at least one embedding is needed to fit")
        weights = _validated_weights(sample_weight, n_rows)
        device = _compute_device(arr)
        total = torch.zeros(n_features, dtype=torch.float64, device=device)
        invalid: dict[int, str] = {}
        for start, stop, chunk, as64 in _float64_chunks(arr, device):
            invalid.update(_invalid_in_chunk(chunk, start))
            if invalid:
                continue
            units = _unit_rows(as64)
            if weights is not None:
                units = units * torch.from_numpy(weights[start:stop]).to(device)[:, None]
            total += units.sum(dim=0)
        if invalid:
            raise ValueError(_describe_invalid(invalid))
        total_weight = float(n_rows if weights is None else weights.sum())
        mean = total.cpu().numpy() / total_weight
        self.mean_ = mean
        self.anisotropy_ = float(np.linalg.norm(mean))
        self.n_features_in_ = int(n_features)
        self.whitening_ = None
        if self.whiten:
            self.whitening_ = _zca_whitening(self._second_moment(arr, weights, total_weight))
        return self

    def _second_moment(self, arr, weights, total_weight: float) -> np.ndarray:
        """Weighted ``sum a_i z_i z_i^T / A`` of ``z_i = u_i - m`` (or ``u_i``), shape (d, d)."""
        device = _compute_device(arr)
        shift = torch.from_numpy(self.mean_).to(device) if self.center else None
        moment = torch.zeros((arr.shape[1],) * 2, dtype=torch.float64, device=device)
        for start, stop, _, as64 in _float64_chunks(arr, device):
            z = _unit_rows(as64)
            if shift is not None:
                z = z - shift
            weighted = (
                z
                if weights is None
                else z * torch.from_numpy(weights[start:stop]).to(device)[:, None]
            )
            moment += weighted.T @ z
        return moment.cpu().numpy() / total_weight

    # ------------------------------------------------------------------ transforming
    def _check_fitted(self) -> None:
        if not hasattr(self, "mean_"):
            raise ValueError(
                "this SphereTransform is not fitted yet; call fit (or from_state) first"
            )

    def transform(self, X):
        """Map rows of ``X`` to the unit sphere with the stored ``m`` (and whitening).

        Parameters
        ----------
        X : ndarray or torch.Tensor, shape (M, d)

        Returns
        -------
        ndarray or torch.Tensor, shape (M, d)
            Unit rows, same kind and device as ``X``; float64 for float64 or
            integer input, float32 otherwise.
        """
        self._check_fitted()
        arr = _as_matrix(X)
        if arr.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {arr.shape[1]} features but this SphereTransform was fitted on "
                f"{self.n_features_in_}"
            )
        is_tensor = torch.is_tensor(arr)
        out_dtype = _output_dtype(arr)
        if is_tensor:
            out = torch.empty(tuple(arr.shape), dtype=out_dtype, device=arr.device)
        else:
            out = torch.from_numpy(
                np.empty(arr.shape, dtype=np.float32 if out_dtype == torch.float32 else np.float64)
            )
        device = _compute_device(arr)
        shift = torch.from_numpy(self.mean_).to(device) if self.center else None
        whitening = (
            None if self.whitening_ is None else torch.from_numpy(self.whitening_).to(device)
        )
        invalid: dict[int, str] = {}
        for start, stop, chunk, as64 in _float64_chunks(arr, device):
            invalid.update(_invalid_in_chunk(chunk, start))
            if invalid:
                continue
            out[start:stop] = self._map_units(_unit_rows(as64), shift, whitening).to(
                out.device, out_dtype
            )
        if invalid:
            raise ValueError(_describe_invalid(invalid))
        return out if is_tensor else out.numpy()

    def _map_units(self, units: torch.Tensor, shift, whitening) -> torch.Tensor:
        """Centre, whiten and renormalise unit rows (float64); zero centred rows keep ``u``."""
        if shift is None and whitening is None:
            return units
        z = units if shift is None else units - shift
        degenerate = (z * z).sum(dim=1, keepdim=True) <= self.eps
        if whitening is not None:
            z = z @ whitening
        z = z / torch.linalg.vector_norm(z, dim=1, keepdim=True)
        return torch.where(degenerate, units, z)

    def fit_transform(self, X, sample_weight=None):
        """``fit(X, sample_weight).transform(X)``."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    # ------------------------------------------------------------------ persistence
    def get_state(self) -> dict:
        """Parameters and fitted attributes as plain Python / numpy values."""
        self._check_fitted()
        return {
            "version": _STATE_VERSION,
            "center": bool(self.center),
            "whiten": bool(self.whiten),
            "eps": float(self.eps),
            "mean_": np.array(self.mean_, dtype=np.float64),
            "anisotropy_": float(self.anisotropy_),
            "whitening_": None
            if self.whitening_ is None
            else np.array(self.whitening_, dtype=np.float64),
            "n_features_in_": int(self.n_features_in_),
        }

    @classmethod
    def from_state(cls, state: dict) -> SphereTransform:
        """Rebuild a fitted transform from :meth:`get_state` output (arrays may be lists)."""
        missing = [k for k in ("center", "whiten", "mean_", "whitening_") if k not in state]
        if missing:
            raise ValueError(f"SphereTransform state is missing key(s) {missing}")
        if state.get("version", _STATE_VERSION) != _STATE_VERSION:
            raise ValueError(f"unsupported SphereTransform state version {state['version']!r}")
        model = cls(
            center=bool(state["center"]),
            whiten=bool(state["whiten"]),
            eps=float(state.get("eps", 1e-12)),
        )
        mean = np.asarray(state["mean_"], dtype=np.float64)
        if mean.ndim != 1 or mean.size < 2 or not np.isfinite(mean).all():
            raise ValueError(
                f"state['mean_'] must be a finite vector of length >= 2, got shape {mean.shape}"
            )
        d = mean.size
        whitening = state["whitening_"]
        if whitening is not None:
            whitening = np.asarray(whitening, dtype=np.float64)
            if whitening.shape != (d, d) or not np.isfinite(whitening).all():
                raise ValueError(
                    f"state['whitening_'] must be a finite ({d}, {d}) matrix, got shape {whitening.shape}"
                )
        if model.whiten != (whitening is not None):
            raise ValueError("state['whiten'] and state['whitening_'] disagree")
        model.mean_ = mean
        model.anisotropy_ = float(np.linalg.norm(mean))
        model.whitening_ = whitening
        model.n_features_in_ = d
        return model
