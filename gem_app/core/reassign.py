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
from functools import cached_property

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from gem_app.core import dual, mm
from gem_app.core.rows import RowWeights, prepare_rows
from gem_app.utils.validation import check_real

__all__ = ["Reassignment", "document_scores", "q_from_scores", "q_step"]

_CHUNK_ROWS = 1 << 16
_GAP_TOL = 1e-11
_NEWTON_STEPS = 8


class Reassignment:
    """One q-step over frozen scores: the masses and the dual; memberships on demand.

    Attributes
    ----------
    masses : ndarray of shape (n_clusters,), float64, sums to 1
        ``rho_k = sum_i a_i q_ik / A`` at the solved dual.
    dual : ndarray of shape (n_clusters,), float64
        ``eta`` (zeros when balance is 0).
    temperature : float
    q : ndarray of shape (n_documents, n_clusters), float32
        ``softmax((s + eta) / T)`` by row, computed on first access (one pass over the
        scores; the app's sliders need only the masses).
    """

    def __init__(self, masses, dual, temperature: float, chunks):
        self.masses, self.dual, self.temperature = masses, dual, temperature
        self._chunks = chunks

    @cached_property
    def q(self) -> np.ndarray:
        eta = torch.as_tensor(self.dual, dtype=torch.float32)
        parts = [dual.soft_assignments(c, eta, self.temperature)[0] for c in self._chunks]
        return torch.cat(parts).numpy()


def document_scores(model, X) -> np.ndarray:
    """The frozen scores ``s_ik = kappa_k mu_k . x_i + log C_d(kappa_k) + log pi_k``, row-shifted.

    Each row is shifted by its maximum (``max_k s_ik = 0``): the soft memberships
    depend only on differences within a row, and the shift keeps float32 precise.

    Parameters
    ----------
    model : fitted :class:`gem_app.core.gem.GEM`
    X : ndarray of shape (n_documents, n_features)
        Embeddings as given to ``fit`` (they are mapped to the sphere by the model).

    Returns
    -------
    ndarray of shape (n_documents, n_clusters), float32
    """
    check_is_fitted(model, "mean_directions_")
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != model.n_features_in_:
        raise ValueError(f"X must have shape (n_documents, {model.n_features_in_}), got {X.shape}")
    device = torch.device("cpu")
    mean, whitening = model.transform_.correction()
    scores = mm.ScoreMap(mm.Params.of_model(model), device=device, dtype=torch.float64)
    out = np.empty((X.shape[0], model.n_clusters), dtype=np.float32)
    for start in range(0, X.shape[0], _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, X.shape[0])
        rows = prepare_rows(
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
    T = check_real(temperature, "temperature", minimum=0, exclusive_minimum=True)
    lam = check_real(balance, "balance", minimum=0)
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
    bounds = [(a, min(a + _CHUNK_ROWS, n)) for a in range(0, n, _CHUNK_ROWS)]
    with warnings.catch_warnings():
        # the app shares its score matrix read-only; these views are only ever read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        chunks = [torch.from_numpy(scores[a:b]) for a, b in bounds]
    cpu = torch.device("cpu")
    rows = RowWeights.from_array(w, bounds, device=cpu, dtype=torch.float32)
    start = np.zeros(K) if dual_start is None else np.asarray(dual_start, dtype=np.float64)
    if start.shape != (K,):
        raise ValueError(f"dual_start must have shape ({K},), got {start.shape}")
    if lam == 0.0:  # eta = 0 is exact; one pass gives the masses
        eta = np.zeros(K)
        stats = dual.assignment_stats(chunks, rows, eta, T, full=False)
    else:
        eta, stats = _solve_warm(chunks, rows, start, T, lam, gap_tol=_GAP_TOL)
    masses = np.clip(stats.masses, 0.0, None)
    return Reassignment(masses / masses.sum(), eta, T, chunks)


def _solve_warm(chunks, rows, eta, temperature, balance, *, gap_tol):
    """The dual by damped Newton steps from a warm ``eta``, one pass over the scores each.

    Near a previous solution (the next position of a slider) the full-Hessian Newton step
    converges in one or two passes; a step is kept only if it lowers the dual g. When the
    steps stall (or the start is far), the trust-region solver of
    :func:`gem_app.core.dual.solve_dual` finishes from the best point.

    Returns
    -------
    eta : ndarray of shape (K,), stats : QStats at eta
    """
    stats = dual.assignment_stats(chunks, rows, eta, temperature)
    value = stats.dual(eta, temperature, balance)
    for _ in range(_NEWTON_STEPS):
        if dual.duality_gap(stats.masses, eta, balance) <= gap_tol:
            return eta, stats
        step = dual.newton_step(eta, stats, temperature, balance) - eta
        for scale in (1.0, 0.5, 0.25):
            candidate = eta + scale * step
            trial = dual.assignment_stats(chunks, rows, candidate, temperature)
            trial_value = trial.dual(candidate, temperature, balance)
            if trial_value <= value:
                eta, stats, value = candidate, trial, trial_value
                break
        else:
            break
    eta, stats, _ = dual.solve_dual(
        chunks, rows, eta, temperature, balance, floor=-np.inf, gap_tol=gap_tol
    )
    return eta, stats


def q_step(
    model, X, temperature: float, balance: float, weights=None
) -> tuple[np.ndarray, np.ndarray]:
    """One exact q-step of a fitted GEM at a new temperature and balance.

    Parameters
    ----------
    model : fitted :class:`gem_app.core.gem.GEM`
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
