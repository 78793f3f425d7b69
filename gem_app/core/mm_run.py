"""The MM loop of GEM: one initialisation, from the seeds to the polished final q-step.

Every half-step can only increase J (docs/method.md sections 3-5): the q-step through the
dual (:mod:`gem_app.core.dual`), the (mu, kappa)-step in closed form (:mod:`gem_app.core.mm`).
"""

from __future__ import annotations

import numpy as np
import torch

from gem_app.core import dual, mm
from gem_app.core.seeding import spherical_kmeans_plus_plus
from gem_app.utils.information import entropy

__all__ = ["FAST_NEWTON_MAX_K", "POLISH_NEWTON_PASSES", "MMRun"]

FAST_NEWTON_MAX_K = 64  # the per-iteration Newton step uses the full Hessian up to this K
POLISH_NEWTON_PASSES = 4  # Newton passes of the final q-step before the float64 solver


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
    """

    def __init__(self, est, rows, weight, log_prior, device, dtype, rng):
        self.est, self.rows = est, rows
        self.log_prior, self.device, self.dtype, self.rng = log_prior, device, dtype, rng
        self.weight = weight
        self.positive = np.flatnonzero(weight > 0)
        self.T = float(est.temperature)
        self.lam = float(est.balance)
        self.tied = est.concentration == "tied"
        self.A = rows.total_weight
        self.K = est.n_clusters
        self.max_iter, self.tol = est.max_iter, est.tol
        self._scores = None
        self._scores_of = None  # the parameters whose scores the cache holds

    def score_map(self, params):
        return mm.ScoreMap(params, device=self.device, dtype=self.dtype)

    def fit(self) -> dict:
        """Run to convergence (or max_iter) and polish; the fitted attributes, without ``_``."""
        est = self.est
        params, reseeded, history = self._seeded_start()
        eta = np.zeros(self.K)
        previous = None
        converged = False
        n_iter = 0
        while True:
            polish = converged or n_iter >= self.max_iter
            used, stats, objective, eta = self._q_step(params, eta, history[-1], final=polish)
            history.append(float(objective))
            if polish:
                break
            n_iter += 1
            if est.callback is not None:
                est.callback(n_iter, objective)
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
        slack = 1e-12 * abs(floor)
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
        return relative * max(1.0, abs(floor))

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
        size = min(n, max(20_000, 100 * self.K))
        sample = np.sort(self.rng.choice(self.positive, size=size, replace=False))
        x = self.rows.gather(sample)
        w = self.weight[sample]
        if init == "random":
            idx = self.rng.choice(len(sample), size=self.K, replace=False, p=w / w.sum())
            return x[idx]
        return spherical_kmeans_plus_plus(x, w, self.K, self.rng)
