"""The MM loop of GEM: one initialisation, from the seeds to the polished final q-step.

Every half-step can only increase J (docs/method.md sections 3-5): the q-step through the
dual (:mod:`gem_app.core.dual`), the (mu, kappa)-step in closed form (:mod:`gem_app.core.mm`).

On many rows the initialisation is a warm start (as faiss trains k-means on 256 rows per
centroid): spherical k-means++ seeds a few rows per cluster, the MM algorithm runs on a
random sample of the rows to a loose tolerance, and the iterations on all rows start from
its parameters and dual, so that a fit spends few passes over all rows.
"""

from __future__ import annotations

import numpy as np
import torch

from gem_app.core import dual, mm
from gem_app.core.rows import Rows, chunk_rows
from gem_app.core.seeding import spherical_kmeans_plus_plus
from gem_app.utils.information import entropy

__all__ = [
    "FAST_NEWTON_MAX_K",
    "POLISH_NEWTON_PASSES",
    "SEED_MIN_ROWS",
    "SEED_ROWS_PER_CLUSTER",
    "WARM_MIN_ROWS",
    "WARM_ROWS_PER_CLUSTER",
    "WARM_TOL",
    "MMRun",
]

FAST_NEWTON_MAX_K = 64  # the per-iteration Newton step uses the full Hessian up to this K
POLISH_NEWTON_PASSES = 4  # Newton passes of the final q-step before the float64 solver
WARM_ROWS_PER_CLUSTER = 256  # the default warm-start sample: rows per cluster (as faiss) ...
WARM_MIN_ROWS = 10_000  # ... and at least this many rows
WARM_TOL = 1e-4  # the warm start's tolerance (at most loose as this; tol when tighter)
SEED_ROWS_PER_CLUSTER = 40  # k-means++ seeds on this many rows per cluster ...
SEED_MIN_ROWS = 8_192  # ... and at least this many (all rows when there are fewer)


def _sample_sizes(n_rows: int, n_clusters: int, init_size: int | None) -> tuple[int, int]:
    """Rows of the warm-start sample and of the k-means++ seeding sample.

    Parameters
    ----------
    n_rows : int
        Rows of positive weight.
    n_clusters : int
    init_size : int or None
        The estimator's ``init_size`` (None: max(WARM_ROWS_PER_CLUSTER * K, WARM_MIN_ROWS)).

    Returns
    -------
    warm : int
        Rows of the warm start; ``n_rows`` (no warm start) unless it is at most half of them.
    seed : int
        Rows k-means++ seeds on: min(warm, max(SEED_ROWS_PER_CLUSTER * K, SEED_MIN_ROWS)),
        at least n_clusters.
    """
    if init_size is None:
        init_size = max(WARM_ROWS_PER_CLUSTER * n_clusters, WARM_MIN_ROWS)
    warm = min(n_rows, max(int(init_size), n_clusters))
    if 2 * warm > n_rows:
        warm = n_rows
    seed = min(warm, max(SEED_ROWS_PER_CLUSTER * n_clusters, SEED_MIN_ROWS, n_clusters))
    return warm, seed


class MMRun:
    """One initialisation of the MM algorithm, from the initial directions to the polish.

    Parameters
    ----------
    est : GEM
        The estimator whose (validated) parameters are used: n_clusters, balance,
        temperature, concentration, init, max_iter, tol, callback.
    rows : gem_app.core.rows.Rows
        The corrected points and their masses.
    weight : ndarray of shape (n_samples,)
        The masses a_i >= 0 (rows with a_i = 0 are never chosen as centres).
    log_prior : ndarray of shape (n_clusters,)
    device, dtype : where and in which dtype the scores are computed
    rng : numpy.random.Generator
    init_size : int or None
        The rows of the warm start (:func:`_sample_sizes`); None: the estimator's.
    """

    def __init__(self, est, rows, weight, log_prior, device, dtype, rng, init_size=None):
        self.est, self.rows = est, rows
        self.log_prior, self.device, self.dtype, self.rng = log_prior, device, dtype, rng
        self.weight = weight
        self.positive = np.flatnonzero(weight > 0)
        self.T = float(est.temperature)
        self.lam = float(est.balance)
        self.tied = est.concentration == "tied"
        self.A = rows.total_weight
        self.K = est.n_clusters
        self.max_iter, self.tol, self.callback = est.max_iter, est.tol, est.callback
        size = est.init_size if init_size is None else init_size
        self.warm_size, self.seed_size = _sample_sizes(len(self.positive), self.K, size)
        self._scores = None
        self._scores_of = None  # the parameters whose scores the cache holds

    def score_map(self, params):
        return mm.ScoreMap(params, device=self.device, dtype=self.dtype)

    def fit(self) -> dict:
        """Run to convergence (or max_iter) and polish; the fitted attributes, without ``_``."""
        if isinstance(self.est.init, str) and self.warm_size < len(self.positive):
            params, eta = self._warm_start()
            reseeded, history = [], []
        else:
            params, reseeded, history = self._seeded_start()
            eta = np.zeros(self.K)
        return self._iterate(params, eta, reseeded, history)

    def _iterate(self, params, eta, reseeded, history, *, polish=True):
        """MM iterations from ``params`` and the warm dual ``eta`` to tolerance or max_iter.

        ``history`` holds J before the first q-step (empty when unknown: the first
        q-step is then unchecked). With ``polish`` the last q-step is :meth:`_polish` and
        the fitted attributes are returned; without it, ``(params, eta)`` for a warm start.
        """
        previous = None
        converged = False
        n_iter = 0
        while True:
            last = converged or n_iter >= self.max_iter
            if last and not polish:
                return params, eta
            floor = history[-1] if history else -np.inf
            used, stats, objective, eta = self._q_step(params, eta, floor, final=last)
            history.append(float(objective))
            if last:
                break
            n_iter += 1
            if self.callback is not None:
                self.callback(n_iter, objective)
            if previous is not None:
                scale = self.tol * max(1.0, abs(objective))
                gap = dual.duality_gap(stats.masses, used, self.lam)
                converged = abs(objective - previous) <= scale and gap <= scale
            previous = objective
            if converged:
                continue  # polish: the dual solved to full tolerance, and the labels formed
            mean_entropy = self._mean_entropy(params, stats, used)
            params, events = self._m_step(stats, params, n_iter)
            reseeded += events
            history.append(
                mm.linear_term(params, stats, self.A)
                + self.T * mean_entropy
                + self.lam * entropy(stats.masses)
            )
        return {
            "mean_directions": params.mean_directions,
            "concentrations": params.concentrations,
            "cluster_masses": stats.masses,
            "labels": stats.labels,
            "objective_history": history,
            "objective": history[-1],
            "dual": used,
            "prior": np.exp(self.log_prior),
            "n_iter": n_iter,
            "converged": converged,
            "reseeded": reseeded,
        }

    def _warm_start(self):
        """Parameters and dual of the MM algorithm run on a random sample of the rows.

        ``warm_size`` rows of positive weight are drawn uniformly (keeping their masses),
        seeded by k-means++ and iterated to the tolerance max(tol, WARM_TOL) without a
        polish. Returns (params, eta) for the iterations on all rows.
        """
        sample = np.sort(self.rng.choice(self.positive, size=self.warm_size, replace=False))
        points = self.rows.gather(sample, dtype=self.dtype)
        d = points.shape[1]
        rows = Rows(
            points,
            self.weight[sample],
            None,
            None,
            device=self.device,
            dtype=self.dtype,
            chunk_size=chunk_rows(d, self.K, self.device),
            eps=self.rows.eps,
        )
        run = MMRun(
            self.est, rows, self.weight[sample], self.log_prior, self.device, self.dtype,
            self.rng, init_size=self.warm_size,
        )  # fmt: skip
        run.tol, run.callback = max(self.tol, WARM_TOL), None
        params, reseeded, history = run._seeded_start()
        return run._iterate(params, np.zeros(self.K), reseeded, history, polish=False)

    def _seeded_start(self):
        """Initial directions, one hard nearest-centre pass and the first (mu, kappa)-step.

        Returns (params, re-seeding events, [J of the hard assignment at params]).
        """
        K, rows = self.K, self.rows
        centres = self._initial_directions()
        unit = mm.Params(centres, np.ones(K), np.zeros(K))
        sm = self.score_map(unit)
        stats = mm.resultant_pass(lambda j: sm(rows, j), rows, None, 1.0, hard=True)
        start = mm.Params(centres, np.ones(K), self.log_prior)
        params, reseeded = self._m_step(stats, start, 0)
        return (
            params,
            reseeded,
            [mm.linear_term(params, stats, self.A) + self.lam * entropy(stats.masses)],
        )

    def _mean_entropy(self, params, stats, eta) -> float:
        """(1/A) sum_i a_i H(q_i) = mean_lse - (lin + rho . eta) / T  (docs/method.md)."""
        lin = mm.linear_term(params, stats, self.A)
        return stats.mean_lse - (lin + stats.masses @ eta) / self.T

    def _q_step(self, params, eta, floor, *, final):
        """The q-step at the warm dual ``eta``, checked; a full dual solve when needed.

        With lambda = 0 it is one fused pass (eta = 0 is exact). Otherwise one pass fills
        the score cache and forms q(eta), its resultants, J(q(eta)) and the dual's gradient
        and Hessian at eta. If J did not decrease, q(eta) is kept (monotone ascent needs no
        more) and one Newton step gives the warm eta of the next iteration. Otherwise the
        dual is solved to tolerance on the cached scores. The final q-step is
        :meth:`_polish`.

        Returns
        -------
        eta_used, stats, objective, eta_next
        """
        rows = self.rows
        sm = self.score_map(params)
        if self.lam == 0.0:
            stats = mm.resultant_pass(
                lambda j: sm(rows, j), rows, None, self.T, labels=final, resultants=not final
            )
            zero = np.zeros(self.K)
            return zero, stats, self._objective(stats, zero), zero
        scores = self._score_views()
        fresh = self._scores_of is params  # the cache holds these parameters' scores
        self._scores_of = params
        fill = (lambda j: scores[j]) if fresh else (lambda j: sm(rows, j, out=scores[j]))
        slack = 1e-12 * abs(floor) if np.isfinite(floor) else 0.0
        if final:
            eta, stats, objective = self._polish(fill, scores, eta, floor - slack)
            return eta, stats, objective, eta
        stats = mm.resultant_pass(fill, rows, eta, self.T, second_moments=self._moments)
        objective = self._objective(stats, eta)
        if objective >= floor - slack:
            return (
                eta,
                stats,
                objective,
                dual.newton_step(eta, self._qstats(stats), self.T, self.lam),
            )
        eta, _, _ = dual.solve_dual(
            scores,
            rows,
            eta,
            self.T,
            self.lam,
            floor=floor - slack,
            gap_tol=self._gap_tol(floor, 1e-8),
        )
        stats = mm.resultant_pass(lambda j: scores[j], rows, eta, self.T)
        return eta, stats, self._objective(stats, eta), eta

    def _polish(self, fill, scores, eta, floor):
        """The final q-step: the dual to a gap of 1e-12 max(1, |J|), with the hard labels.

        Newton steps from the warm eta, one pass over the scores each (the first one also
        computes them when the parameters changed since the last pass), in the compute
        dtype with float64 sums, and no resultant GEMM (the final q needs only masses,
        J and labels). A point is accepted when its gap is below tolerance and J did not
        decrease; if POLISH_NEWTON_PASSES passes do not get there, the float64
        trust-region solver finishes (:func:`gem_app.core.dual.solve_dual`).
        """
        rows, gap_tol = self.rows, self._gap_tol(floor, 1e-12)
        current, chunk = eta, fill
        for _ in range(POLISH_NEWTON_PASSES):
            stats = mm.resultant_pass(
                chunk,
                rows,
                current,
                self.T,
                labels=True,
                second_moments=self._moments,
                resultants=False,
            )
            chunk = lambda j: scores[j]  # noqa: E731  (the cache is filled now)
            objective = self._objective(stats, current)
            gap = dual.duality_gap(stats.masses, current, self.lam)
            if gap <= gap_tol and objective >= floor:
                return current, stats, objective
            current = dual.newton_step(current, self._qstats(stats), self.T, self.lam)
        eta, _, _ = dual.solve_dual(
            scores, rows, eta, self.T, self.lam, floor=floor, gap_tol=gap_tol
        )
        stats = mm.resultant_pass(
            lambda j: scores[j], rows, eta, self.T, labels=True, resultants=False
        )
        return eta, stats, self._objective(stats, eta)

    @property
    def _moments(self) -> str:
        """The second moments a pass forms for the Newton step: full up to FAST_NEWTON_MAX_K."""
        return "full" if self.K <= FAST_NEWTON_MAX_K else "diag"

    @staticmethod
    def _qstats(stats) -> dual.QStats:
        return dual.QStats(stats.masses, stats.second_moments, stats.mean_lse)

    @staticmethod
    def _gap_tol(floor: float, relative: float) -> float:
        return relative * max(1.0, abs(floor) if np.isfinite(floor) else 1.0)

    def _objective(self, stats, eta) -> float:
        return dual.objective(stats.masses, stats.mean_lse, eta, self.T, self.lam)

    def _score_views(self):
        """Views of one preallocated (N, K) score buffer, one per row chunk (no fragmentation)."""
        if self._scores is None:
            self._scores = torch.empty(
                (self.rows.n_rows, self.K), dtype=self.dtype, device=self.device
            )
        return [self._scores[a:b] for a, b in self.rows.bounds]

    def _m_step(self, stats, params, iteration):
        """The (mu, kappa)-step; an empty cluster moves to the worst-fitted row of positive mass."""
        new, empty = mm.update_parameters(stats, params, tied=self.tied)
        if empty:
            worst = np.argsort(stats.row_lse[self.positive], kind="stable")[: len(empty)]
            new.mean_directions[empty] = self.rows.gather(self.positive[worst])
        return new, [(iteration, int(k)) for k in empty]

    def _initial_directions(self) -> np.ndarray:
        init = self.est.init
        if not isinstance(init, str):
            init = np.asarray(init, dtype=np.float64)
            return init / np.linalg.norm(init, axis=1, keepdims=True)
        n = len(self.positive)
        if self.seed_size < n:
            sample = np.sort(self.rng.choice(self.positive, size=self.seed_size, replace=False))
        else:
            sample = self.positive
        x = self.rows.gather(sample)
        w = self.weight[sample]
        if init == "random":
            idx = self.rng.choice(len(sample), size=self.K, replace=False, p=w / w.sum())
            return x[idx]
        return spherical_kmeans_plus_plus(x, w, self.K, self.rng)
