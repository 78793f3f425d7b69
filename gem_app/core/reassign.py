"""Re-assign documents with the geometry frozen: one exact q-step of GEM.

With the fitted vMF parameters fixed, the scores
``s_ik = kappa_k mu_k . x_i + log C_d(kappa_k) + log pi_k`` do not depend on the
assignment temperature T or the balance lambda. One exact q-step (METHOD.md section 3)
then gives the soft memberships ``q_ik = softmax_k((s_ik + eta_k) / T)`` with ``eta``
the minimiser of the dual ``g``, and the masses ``rho_k = sum_i a_i q_ik / A``.

The app moves T and lambda with sliders and shows the masses moving, so the scores
are computed once per fit (:func:`document_scores`, an N x K float32 matrix) and
each slider move only solves the K-dimensional dual over them: :func:`q_from_scores`
for one (T, lambda), :class:`FrozenQStep` for many (the sliders). The latter keeps, per
temperature, the tempered exponentials ``E_ik = exp((s_ik - max_k s_ik) / T)`` in float64,
so that a pass of the dual at any ``eta`` is two matrix-vector products and one K x N x K
product (``q_ik = E_ik b_k / Z_i`` with ``b = exp(eta / T)``, ``Z = E b``; no exp over the
N x K scores), and starts Newton from the nearest (T, lambda) it has solved.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from functools import cached_property

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from gem_app.core import dual, mm
from gem_app.core.rows import RowWeights, prepare_rows
from gem_app.core.tempered import TemperedScores
from gem_app.core.threads import chunk_workers
from gem_app.utils.validation import check_real

__all__ = ["FrozenQStep", "Reassignment", "document_scores", "q_from_scores", "q_step"]

_CHUNK_ROWS = 1 << 16
_GAP_TOL = 1e-11
_NEWTON_STEPS = 8
_TEMPERED_MAX_ENTRIES = 1 << 26  # float64 tempered exponentials up to 512 MiB
_TEMPERED_NEWTON_STEPS = 30
_HALVINGS = 20
_SOLVED_KEPT = 64


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


class FrozenQStep:
    """Exact q-steps over one frozen score matrix at many (T, lambda): the app's sliders.

    Each :meth:`solve` returns what :func:`q_from_scores` returns (the same optimum of the
    dual, to its tolerance), faster for a sequence of nearby (T, lambda):

    - the scores are held once as float32 on ``device``; per temperature, the tempered
      exponentials (:class:`gem_app.core.tempered.TemperedScores`) are formed once, so the
      Newton passes at that temperature need no exp over the N x K scores (up to
      2**26 entries; beyond, every pass is :func:`gem_app.core.dual.assignment_stats`);
    - Newton starts from the solved (T, lambda) nearest in (log T, log(1 + lambda)), with
      the same safeguard as the exact path (a step is kept only if it lowers the dual), and
      that path finishes whatever these steps leave.

    Parameters
    ----------
    scores : ndarray of shape (n_documents, n_clusters)
        From :func:`document_scores`.
    weights : array-like of shape (n_documents,), optional
        Document masses ``a_i`` (tokens); ones when omitted.
    device : str or torch.device, optional
        Where the tempered passes run (default: CPU).
    """

    def __init__(self, scores, weights=None, *, device=None):
        scores, w = _check_scores(scores, weights)
        self.n_clusters = scores.shape[1]
        self._chunks, self._rows = _chunked(scores, w)
        self._device = torch.device("cpu" if device is None else device)
        self._tempered_ok = scores.numel() <= _TEMPERED_MAX_ENTRIES
        self._scores = scores.to(self._device)
        self._weights = torch.as_tensor(w, dtype=torch.float64, device=self._device)
        self._tempered: TemperedScores | None = None
        self._solved: OrderedDict = OrderedDict()

    def remember(self, temperature: float, balance: float, dual_solution) -> None:
        """Record a known solution of the dual (e.g. the fit's ``dual_`` at its T and lambda)."""
        T, lam = _check_slider(temperature, balance)
        eta = np.asarray(dual_solution, dtype=np.float64)
        if eta.shape != (self.n_clusters,):
            raise ValueError(f"dual_solution must have shape ({self.n_clusters},), got {eta.shape}")
        self._keep(T, lam, eta)

    def nearest(self, temperature: float, balance: float) -> np.ndarray:
        """The solved dual nearest to (T, lambda) in (log T, log(1 + lambda)); zeros if none."""
        if not self._solved:
            return np.zeros(self.n_clusters)
        here = (math.log(temperature), math.log1p(balance))
        key = min(
            self._solved,
            key=lambda k: (math.log(k[0]) - here[0]) ** 2 + (math.log1p(k[1]) - here[1]) ** 2,
        )
        return self._solved[key]

    def solve(self, temperature: float, balance: float) -> Reassignment:
        """The exact q-step at (T, lambda): masses, dual, memberships on demand.

        The passes run chunk-parallel in one :func:`gem_app.core.threads.chunk_workers`
        session. Not thread-safe: one solve at a time (the app's view holds a lock).
        """
        T, lam = _check_slider(temperature, balance)
        with chunk_workers(self._device):
            return self._solve(T, lam)

    def _solve(self, T: float, lam: float) -> Reassignment:
        tempered = self._tempered_at(T)
        if lam == 0.0:  # eta = 0 is exact; one pass gives the masses
            eta = np.zeros(self.n_clusters)
            stats = tempered.stats(eta, full=False) if tempered is not None else None
            if stats is None:
                stats = dual.assignment_stats(self._chunks, self._rows, eta, T, full=False)
        else:
            eta, stats = self._newton(tempered, self.nearest(T, lam), T, lam)
            self._keep(T, lam, eta)
        masses = np.clip(stats.masses, 0.0, None)
        return Reassignment(masses / masses.sum(), eta, T, self._chunks)

    def _tempered_at(self, T: float) -> TemperedScores | None:
        if not self._tempered_ok:
            return None
        if self._tempered is None or self._tempered.temperature != T:
            self._tempered = TemperedScores(self._scores, self._weights, T, reuse=self._tempered)
        return self._tempered

    def _newton(self, tempered, eta, T: float, lam: float):
        """Damped full-Newton steps over the tempered passes, finished by :func:`_solve_warm`.

        A step is kept only if it lowers the dual g (as in :func:`_solve_warm`); the exact path
        takes over when no step lowers it, or after ``_TEMPERED_NEWTON_STEPS`` steps.
        """
        eta = eta - eta.mean()
        stats = tempered.stats(eta) if tempered is not None else None
        if stats is not None:
            value = stats.dual(eta, T, lam)
            for _ in range(_TEMPERED_NEWTON_STEPS):
                if dual.duality_gap(stats.masses, eta, lam) <= _GAP_TOL:
                    return eta, stats
                step = dual.newton_step(eta, stats, T, lam) - eta
                # far from the solution (nearly hard assignments, a peaked beta) the Hessian is
                # nearly singular and a full step can reach |step| ~ 1e9: at most max(T, lambda,
                # 1) per coordinate (a box trust region), then backtracking
                length = np.abs(step).max()
                radius = max(T, lam, 1.0)
                if length > radius:
                    step *= radius / length
                for halvings in range(_HALVINGS):
                    candidate = eta + 0.5**halvings * step
                    trial = tempered.stats(candidate)
                    if trial is not None and trial.dual(candidate, T, lam) <= value:
                        eta, stats, value = candidate, trial, trial.dual(candidate, T, lam)
                        break
                else:
                    break
        return _solve_warm(self._chunks, self._rows, eta, T, lam, gap_tol=_GAP_TOL)

    def _keep(self, T: float, lam: float, eta: np.ndarray) -> None:
        self._solved[(T, lam)] = eta
        self._solved.move_to_end((T, lam))
        while len(self._solved) > _SOLVED_KEPT:
            self._solved.popitem(last=False)


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
    T, lam = _check_slider(temperature, balance)
    scores, w = _check_scores(scores, weights)
    K = scores.shape[1]
    chunks, rows = _chunked(scores, w)
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


def _check_slider(temperature, balance) -> tuple[float, float]:
    T = check_real(temperature, "temperature", minimum=0, exclusive_minimum=True)
    return T, check_real(balance, "balance", minimum=0)


def _check_scores(scores, weights) -> tuple[torch.Tensor, np.ndarray]:
    """Scores as a float32 (n, K) CPU tensor and document masses as float64 (n,), checked.

    The tensor shares the memory of a C-contiguous float32 array, read-only or not.
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(
            f"scores must be a non-empty (n_documents, n_clusters) array, got {scores.shape}"
        )
    n = scores.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {w.shape}")
    bad = np.flatnonzero(~np.isfinite(w) | (w <= 0))
    if len(bad):
        raise ValueError(f"weights must be finite and > 0; row {bad[0]} is {w[bad[0]]!r}")
    with warnings.catch_warnings():
        # the app shares its score matrix read-only; the tensor is only ever read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(scores), w


def _chunked(scores: torch.Tensor, w: np.ndarray):
    """Score chunks (views, no copy) and their row masses, for the passes of :mod:`dual`."""
    n = scores.shape[0]
    bounds = [(a, min(a + _CHUNK_ROWS, n)) for a in range(0, n, _CHUNK_ROWS)]
    chunks = [scores[a:b] for a, b in bounds]
    rows = RowWeights.from_array(w, bounds, device=torch.device("cpu"), dtype=torch.float32)
    return chunks, rows


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
