"""Re-assign documents with the geometry frozen: one exact q-step of GEM.

With the fitted vMF parameters fixed, the scores
``s_ik = kappa_k mu_k . x_i + log C_d(kappa_k) + log pi_k`` do not depend on the
assignment temperature T or the balance lambda. One exact q-step (METHOD.md section 3)
then gives the soft memberships ``q_ik = softmax_k((s_ik + eta_k) / T)`` with ``eta``
the minimiser of the dual ``g``, and the masses ``rho_k = sum_i a_i q_ik / A``.

The app moves T and lambda with sliders and shows the masses moving, so the scores
are computed once per fit (:func:`document_scores`, an N x K float32 matrix) and
each slider move only solves the K-dimensional dual over them
(:func:`q_from_scores`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize

from gem_app import mm

__all__ = ["Reassignment", "document_scores", "q_from_scores", "q_step"]

_CHUNK_ROWS = 1 << 16


@dataclass
class Reassignment:
    """One q-step: memberships, masses and the dual.

    Attributes
    ----------
    q : ndarray of shape (n_documents, n_clusters), float32
    masses : ndarray of shape (n_clusters,), float64, sums to 1
    dual : ndarray of shape (n_clusters,), float64 (``eta``; zeros when balance is 0)
    """

    q: np.ndarray
    masses: np.ndarray
    dual: np.ndarray


@dataclass
class _Stats:
    """Weighted statistics of q(eta) = softmax((s + eta)/T) over all rows, float64."""

    masses: np.ndarray  # (K,)
    second_moments: np.ndarray  # (K, K): sum_i a_i q_i q_i^T / A
    mean_lse: float  # (1/A) sum_i a_i logsumexp((s_i + eta)/T)


def _softmax_rows(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    top = z.max(axis=1, keepdims=True)
    e = np.exp(z - top)
    total = e.sum(axis=1, keepdims=True)
    return e / total, (top + np.log(total))[:, 0]


def _stats(scores, weights, eta, temperature) -> _Stats:
    K = scores.shape[1]
    masses, second, lse_sum = np.zeros(K), np.zeros((K, K)), 0.0
    shift = eta.astype(np.float32)
    for a in range(0, scores.shape[0], _CHUNK_ROWS):
        s, w = scores[a : a + _CHUNK_ROWS], weights[a : a + _CHUNK_ROWS]
        q, lse = _softmax_rows((s + shift) / np.float32(temperature))
        wq = q * w[:, None].astype(np.float32)
        masses += wq.sum(axis=0, dtype=np.float64)
        second += (wq.T @ q).astype(np.float64)
        lse_sum += float(w @ lse.astype(np.float64))
    A = float(weights.sum())
    return _Stats(masses / A, second / A, lse_sum / A)


def _beta(eta: np.ndarray, balance: float) -> np.ndarray:
    v = -eta / balance
    e = np.exp(v - v.max())
    return e / e.sum()


def _solve_dual(scores, weights, eta, temperature, balance, *, gap_tol=1e-11, max_iter=50):
    """Minimise g(eta) = T mean_lse + lambda logsumexp(-eta/lambda) by trust-region Newton.

    Gradient rho(eta) - beta(eta); Hessian (diag(rho) - E[q q^T])/T
    + (diag(beta) - beta beta^T)/lambda; the shift invariance is fixed by the penalty
    (sum eta)^2 / (2K). Stops when the duality gap lambda KL(rho || beta) <= gap_tol.
    """
    K = len(eta)
    cache: dict[bytes, _Stats] = {}

    def stats_at(v):
        key = v.tobytes()
        if key not in cache:
            if len(cache) > 8:
                cache.clear()
            cache[key] = _stats(scores, weights, v, temperature)
        return cache[key]

    def value_and_grad(v):
        st = stats_at(v)
        beta_log = -v / balance
        top = beta_log.max()
        g = temperature * st.mean_lse + balance * (top + np.log(np.exp(beta_log - top).sum()))
        shift = v.sum()
        return g + shift**2 / (2 * K), st.masses - _beta(v, balance) + shift / K

    def hessian(v):
        st = stats_at(v)
        beta = _beta(v, balance)
        h = (np.diag(st.masses) - st.second_moments) / temperature
        h += (np.diag(beta) - np.outer(beta, beta)) / balance + 1.0 / K
        return 0.5 * (h + h.T)

    def gap_at(v):
        # lambda KL(rho || beta), with rho renormalised: float32 rows of q sum to 1 only
        # to ~1e-9, which would otherwise put a floor under the gap.
        st, beta = stats_at(v), _beta(v, balance)
        rho = st.masses / st.masses.sum()
        nz = rho > 0
        return balance * float(np.sum(rho[nz] * np.log(rho[nz] / beta[nz])))

    eta = np.asarray(eta, dtype=np.float64) - np.mean(eta)
    # Damped Newton with a backtracking line search: quadratic near the optimum
    # (a warm start from the fit or the previous slider position needs 2-4 passes).
    for _ in range(max_iter):
        gap = gap_at(eta)
        if gap <= gap_tol:
            return eta
        _, grad = value_and_grad(eta)
        step = np.linalg.lstsq(hessian(eta), grad, rcond=None)[0]
        t = 1.0
        while t > 1e-4:  # merit: the duality gap (float64 from the masses, unlike g)
            candidate = eta - t * step
            candidate -= candidate.mean()
            if gap_at(candidate) < gap:
                break
            t *= 0.5
        else:
            break  # no progress along the Newton direction: hand over to the trust region
        eta = candidate
    for gtol in (1e-9, 1e-12):
        if gap_at(eta) <= gap_tol:
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = optimize.minimize(
                value_and_grad,
                eta,
                jac=True,
                hess=hessian,
                method="trust-exact",
                options={"gtol": gtol, "maxiter": 200},
            )
        eta = result.x - result.x.mean()
    return eta


def document_scores(model, X) -> np.ndarray:
    """The frozen scores ``s_ik = kappa_k mu_k . x_i + log C_d(kappa_k) + log pi_k``, row-shifted.

    Each row is shifted by its maximum (``max_k s_ik = 0``): the soft memberships
    depend only on differences within a row, and the shift keeps float32 precise.

    Parameters
    ----------
    model : fitted :class:`gem_app.gem.GEM`
    X : ndarray of shape (n_documents, n_features)
        Embeddings as given to ``fit`` (they are mapped to the sphere by the model).

    Returns
    -------
    ndarray of shape (n_documents, n_clusters), float32
    """
    model._check_fitted()
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != model.n_features_in_:
        raise ValueError(f"X must have shape (n_documents, {model.n_features_in_}), got {X.shape}")
    device = torch.device("cpu")
    mean, whitening = model._geometry()
    scores = mm.ScoreMap(model._params(), device=device, dtype=torch.float64)
    out = np.empty((X.shape[0], model.n_clusters), dtype=np.float32)
    for start in range(0, X.shape[0], _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, X.shape[0])
        rows = mm.prepare_rows(
            np.asarray(X[start:stop], dtype=np.float64),
            np.ones(stop - start),
            mean,
            whitening,
            device=device,
            dtype=torch.float64,
            chunk_size=stop - start,
        )
        block = scores(rows, 0).to(torch.float64)
        # Subtract each row's maximum (q is invariant to it) so float32 keeps
        # ~1e-6 absolute precision: raw scores reach |s| ~ 1e3 at d = 384.
        out[start:stop] = (block - block.max(dim=1, keepdim=True).values).numpy()
    return out


def _check_positive(name: str, value, *, allow_zero: bool) -> float:
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not (np.isfinite(value) and ok):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return value


def q_from_scores(
    scores: np.ndarray,
    weights=None,
    *,
    temperature: float = 1.0,
    balance: float = 1.0,
    dual_start=None,
) -> Reassignment:
    """The exact q-step over precomputed scores.

    Parameters
    ----------
    scores : ndarray of shape (n_documents, n_clusters), float32
        From :func:`document_scores`.
    weights : array-like of shape (n_documents,), optional
        Document masses ``a_i`` (tokens); ones when omitted.
    temperature : float
        ``T > 0``.
    balance : float
        ``lambda >= 0``; very large values force equal masses.
    dual_start : ndarray of shape (n_clusters,), optional
        Warm start for ``eta`` (e.g. the fit's ``dual_`` or the previous slider position).

    Returns
    -------
    Reassignment
    """
    T = _check_positive("temperature", temperature, allow_zero=False)
    lam = _check_positive("balance", balance, allow_zero=True)
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(
            f"scores must be a non-empty (n_documents, n_clusters) array, got {scores.shape}"
        )
    n, K = scores.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {w.shape}")
    bad = np.flatnonzero(~np.isfinite(w) | (w <= 0))
    if len(bad):
        raise ValueError(f"weights must be finite and > 0; row {bad[0]} is {w[bad[0]]!r}")
    if lam == 0.0:
        eta = np.zeros(K)
    else:
        start = np.zeros(K) if dual_start is None else np.asarray(dual_start, dtype=np.float64)
        if start.shape != (K,):
            raise ValueError(f"dual_start must have shape ({K},), got {start.shape}")
        eta = _solve_dual(scores, w, start, T, lam)
    q = np.empty_like(scores)
    masses = np.zeros(K)
    shift = eta.astype(np.float32)
    for a in range(0, n, _CHUNK_ROWS):
        q[a : a + _CHUNK_ROWS], _ = _softmax_rows(
            (scores[a : a + _CHUNK_ROWS] + shift) / np.float32(T)
        )
        masses += w[a : a + _CHUNK_ROWS] @ q[a : a + _CHUNK_ROWS].astype(np.float64)
    masses /= w.sum()
    return Reassignment(q=q, masses=masses / masses.sum(), dual=eta)


def q_step(
    model, X, temperature: float, balance: float, weights=None
) -> tuple[np.ndarray, np.ndarray]:
    """One exact q-step of a fitted GEM at a new temperature and balance.

    Parameters
    ----------
    model : fitted :class:`gem_app.gem.GEM`
    X : ndarray of shape (n_documents, n_features)
    temperature, balance : float
        ``T > 0`` and ``lambda >= 0``.
    weights : array-like of shape (n_documents,), optional
        Document masses (tokens), as in the fit.

    Returns
    -------
    q : ndarray of shape (n_documents, n_clusters), float32
    rho : ndarray of shape (n_clusters,), the masses (sum 1)
    """
    result = q_from_scores(
        document_scores(model, X),
        weights,
        temperature=temperature,
        balance=balance,
        dual_start=model.dual_,
    )
    return result.q, result.masses
