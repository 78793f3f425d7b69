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

__all__ = ["FAST_NEWTON_MAX_K", "MMRun"]

FAST_NEWTON_MAX_K = 64  # the per-iteration Newton step uses the full Hessian up to this K


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
        self._scores = None

    def score_map(self, params):
        return mm.ScoreMap(params, device=self.device, dtype=self.dtype)

    def fit(self) -> dict:
        """Run to convergence (or max_iter) and polish; the fitted attributes, without ``_``."""
        est, rows, K = self.est, self.rows, self.K
        centres = self._initial_directions()
        # Initial (mu, kappa)-step from the hard nearest-centre assignment.
        unit = mm.Params(centres, np.ones(K), np.zeros(K))
        sm = self.score_map(unit)
        stats = mm.resultant_pass(lambda j: sm(rows, j), rows, None, 1.0, hard=True)
        start = mm.Params(centres, np.ones(K), self.log_prior)
        params, reseeded = self._m_step(stats, start, 0)
        history = [mm.linear_term(params, stats, self.A) + self.lam * entropy(stats.masses)]
        eta = np.zeros(K)
        previous = None
        converged = False
        n_iter = 0
        while True:
            polish = converged or n_iter >= est.max_iter
            used, stats, objective, eta = self._q_step(params, eta, history[-1], final=polish)
            history.append(float(objective))
            if polish:
                break
            n_iter += 1
            if est.callback is not None:
                est.callback(n_iter, objective)
            if previous is not None:
                scale = est.tol * max(1.0, abs(objective))
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

    def _mean_entropy(self, params, stats, eta) -> float:
        """(1/A) sum_i a_i H(q_i) = mean_lse - (lin + rho . eta) / T  (docs/method.md)."""
        lin = mm.linear_term(params, stats, self.A)
        return stats.mean_lse - (lin + stats.masses @ eta) / self.T

    def _q_step(self, params, eta, floor, *, final):
        """The q-step at the warm dual ``eta``, checked; a full dual solve when needed.

        With lambda = 0 it is one fused pass (eta = 0 is exact). Otherwise one pass fills
        the score cache and forms q(eta), its resultants, J(q(eta)) and the dual's gradient
        and Hessian at eta. If J did not decrease, q(eta) is kept (monotone ascent needs no
        more) and one Newton step gives the warm eta of the next iteration. Otherwise, and
        for the final polish, the dual is solved to tolerance on the cached scores.

        Returns
        -------
        eta_used, stats, objective, eta_next
        """
        rows = self.rows
        sm = self.score_map(params)
        if self.lam == 0.0:
            stats = mm.resultant_pass(lambda j: sm(rows, j), rows, None, self.T, labels=final)
            zero = np.zeros(self.K)
            return zero, stats, self._objective(stats, zero), zero
        scores = self._score_views()
        slack = 1e-12 * abs(floor)
        if final:
            for j, view in enumerate(scores):
                sm(rows, j, out=view)
        else:
            moments = "full" if self.K <= FAST_NEWTON_MAX_K else "diag"
            stats = mm.resultant_pass(
                lambda j: sm(rows, j, out=scores[j]), rows, eta, self.T, second_moments=moments
            )
            objective = self._objective(stats, eta)
            if objective >= floor - slack:
                at_eta = dual.QStats(stats.masses, stats.second_moments, stats.mean_lse)
                return eta, stats, objective, dual.newton_step(eta, at_eta, self.T, self.lam)
        gap_tol = (1e-12 if final else 1e-8) * max(1.0, abs(floor))
        eta, _, _ = dual.solve_dual(
            scores, rows, eta, self.T, self.lam, floor=floor - slack, gap_tol=gap_tol
        )
        stats = mm.resultant_pass(lambda j: scores[j], rows, eta, self.T, labels=final)
        return eta, stats, self._objective(stats, eta), eta

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
