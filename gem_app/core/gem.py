"""The GEM estimator: an entropy-regularised vMF mixture on the sphere, fitted by MM.

See ../shared/design/METHOD.md and docs/method.md for the objective

    J(q, mu, kappa) = (1/A) sum_i a_i sum_k q_ik [log f_k(x_i) + log pi_k]
                      + T (1/A) sum_i a_i H(q_i) + lambda H(rho)

and for why every half-step below can only increase it.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.exceptions import ConvergenceWarning

from gem_app.core import dual, mm, model_files
from gem_app.core.rows import chunk_rows, compute_dtype, prepare_rows, resolve_device
from gem_app.core.seeding import spherical_kmeans_plus_plus
from gem_app.core.sphere import SphereTransform, check_rows, check_sample_weight
from gem_app.utils.information import entropy

FAST_NEWTON_MAX_K = 64  # the per-iteration Newton step uses the full Hessian up to this K

_INITS = ("k-means++", "random")
_CONCENTRATIONS = ("tied", "per-cluster")


class GEM(ClusterMixin, BaseEstimator):
    """Geometric Entropy Mixing: a vMF mixture with a mixing-balance (entropy) regularizer.

    Parameters
    ----------
    n_clusters : int, default=8
        K, the number of clusters.
    balance : float, default=1.0
        lambda >= 0, weight of the entropy of the cluster masses H(rho).
        0 gives plain vMF-EM with a fixed prior; large values force equal masses.
    temperature : float, default=1.0
        T > 0, the assignment temperature (1: EM posteriors; towards 0: hard assignments).
    prior : array-like of shape (n_clusters,), default=None
        The fixed generative prior pi (normalised here); uniform when None.
    max_iter : int, default=100
        Maximum number of MM iterations.
    tol : float, default=1e-6
        Stop when the relative change of J between two q-steps is below tol.
    n_init : int, default=1
        Number of initialisations; the run with the highest final J is kept.
    init : {"k-means++", "random"} or array-like of shape (n_clusters, n_features)
        Initial mean directions (an array is taken in the corrected sphere coordinates).
    concentration : {"tied", "per-cluster"}, default="tied"
        One kappa shared by all clusters, or one kappa per cluster.
    center, whiten : bool
        The anisotropy correction of gem_app.core.sphere.SphereTransform.
    device : str, default="auto"
        "auto" (the input tensor's device, else CUDA when available, else CPU), "cpu", "cuda".
    random_state : int, numpy Generator/RandomState or None
    callback : callable(iteration, objective), optional
        Called after every q-step (progress bars).

    Attributes
    ----------
    mean_directions_ : ndarray of shape (n_clusters, n_features)
    concentrations_ : ndarray of shape (n_clusters,)
    cluster_masses_ : ndarray of shape (n_clusters,)
        rho, the (token-)weighted share of each cluster under the final q.
    labels_ : ndarray of shape (n_samples,)
    objective_history_ : list of float
        J after the initial (mu, kappa)-step and after every half-step since.
    objective_ : float
        The final J.
    anisotropy_ : float
        R0, the length of the mean resultant of the input directions.
    transform_ : SphereTransform
    dual_ : ndarray of shape (n_clusters,)
        eta, the dual variables of the balance term (frozen for predict_proba).
    n_iter_ : int
    reseeded_ : list of (iteration, cluster)
        Empty clusters that were re-seeded.
    n_features_in_ : int
    """

    def __init__(
        self,
        n_clusters=8,
        *,
        balance=1.0,
        temperature=1.0,
        prior=None,
        max_iter=100,
        tol=1e-6,
        n_init=1,
        init="k-means++",
        concentration="tied",
        center=True,
        whiten=False,
        device="auto",
        random_state=None,
        callback=None,
    ):
        self.n_clusters = n_clusters
        self.balance = balance
        self.temperature = temperature
        self.prior = prior
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.init = init
        self.concentration = concentration
        self.center = center
        self.whiten = whiten
        self.device = device
        self.random_state = random_state
        self.callback = callback

    # ------------------------------------------------------------------ validation
    def _validate_params(self, n_rows: int, n_features: int) -> None:
        K = self.n_clusters
        if not isinstance(K, numbers.Integral) or isinstance(K, bool) or K < 1:
            raise ValueError(f"n_clusters must be a positive integer, got {K!r}")
        if K > n_rows:
            raise ValueError(f"n_clusters={K} is larger than the number of valid rows ({n_rows})")
        if not _is_real(self.balance) or not self.balance >= 0 or not np.isfinite(self.balance):
            raise ValueError(f"balance (lambda) must be a finite number >= 0, got {self.balance!r}")
        if (
            not _is_real(self.temperature)
            or not self.temperature > 0
            or not np.isfinite(self.temperature)
        ):
            raise ValueError(
                f"temperature (T) must be a finite number > 0, got {self.temperature!r}"
            )
        for name in ("max_iter", "n_init"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not _is_real(self.tol) or not self.tol >= 0:
            raise ValueError(f"tol must be >= 0, got {self.tol!r}")
        if self.concentration not in _CONCENTRATIONS:
            raise ValueError(
                f"concentration must be one of {_CONCENTRATIONS}, got {self.concentration!r}"
            )
        if isinstance(self.init, str):
            if self.init not in _INITS:
                raise ValueError(f"init must be one of {_INITS} or an array, got {self.init!r}")
        else:
            init = np.asarray(self.init, dtype=np.float64)
            if init.shape != (K, n_features):
                raise ValueError(
                    f"init array must have shape ({K}, {n_features}), got {init.shape}"
                )
            if not np.all(np.isfinite(init)) or np.any(np.linalg.norm(init, axis=1) == 0):
                raise ValueError("init array rows must be finite and non-zero")

    def _log_prior(self) -> np.ndarray:
        K = self.n_clusters
        if self.prior is None:
            return np.full(K, -np.log(K))
        prior = np.asarray(self.prior, dtype=np.float64)
        if prior.shape != (K,):
            raise ValueError(f"prior must have shape ({K},), got {prior.shape}")
        bad = np.flatnonzero(~np.isfinite(prior) | (prior <= 0))
        if len(bad):
            raise ValueError(f"prior must be finite and > 0; entry {bad[0]} is {prior[bad[0]]!r}")
        return np.log(prior / prior.sum())

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, sample_weight=None):
        """Fit GEM to the rows of X.

        Parameters
        ----------
        X : ndarray or torch.Tensor of shape (n_samples, n_features)
            Embeddings (any norm; they are projected to the sphere). float32 input is
            computed in float32 (float64 accumulations), float64 in float64.
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional
            Masses a_i > 0 (token counts); 1 when None.

        Returns
        -------
        self : GEM
        """
        X = _check_array(X, check_invalid_rows=False)  # SphereTransform.fit scans the rows
        n, d = X.shape
        self._validate_params(n, d)
        weight = check_sample_weight(sample_weight, n)
        log_prior = self._log_prior()
        device = resolve_device(self.device, X)
        dtype = compute_dtype(X)

        self.transform_ = SphereTransform(center=self.center, whiten=self.whiten).fit(
            X, sample_weight=weight
        )
        mean, whitening = self.transform_.correction()
        rows = prepare_rows(
            X,
            weight,
            mean,
            whitening,
            device=device,
            dtype=dtype,
            chunk_size=chunk_rows(d, self.n_clusters, device),
        )
        rng = np.random.default_rng(self.random_state)
        best = None
        for _ in range(self.n_init):
            run = _Run(self, rows, log_prior, device, dtype, rng)
            result = run.fit()
            if best is None or result["objective"] > best["objective"]:
                best = result
        for key, value in best.items():
            setattr(self, f"{key}_", value)
        self.anisotropy_ = float(self.transform_.anisotropy_)
        self.n_features_in_ = d
        if not best["converged"]:
            warnings.warn(
                f"GEM did not converge in max_iter={self.max_iter} iterations "
                f"(tol={self.tol}); increase max_iter",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    # ------------------------------------------------------------------ prediction
    def predict_proba(self, X):
        """Soft assignments q of new rows: the stored transform, parameters and frozen eta.

        Parameters
        ----------
        X : ndarray or torch.Tensor of shape (n_samples, n_features)

        Returns
        -------
        q : same kind as X, shape (n_samples, n_clusters)
            float64 for float64 input, else float32; rows sum to 1.
        """
        parts = [q for _, q in self.iter_proba(X)]
        q = torch.cat(parts) if parts else torch.zeros((0, self.n_clusters))
        if isinstance(X, torch.Tensor):
            return q.to(X.device)
        return q.cpu().numpy()

    def iter_proba(self, X, chunk_size=None):
        """Yield ``(row_slice, q_chunk)`` over X without holding all of q (torch chunks)."""
        self._check_fitted()
        X = _check_array(X, n_features=self.n_features_in_)
        n, d = X.shape
        device = resolve_device(self.device, X)
        dtype = compute_dtype(X)
        mean, whitening = self.transform_.correction()
        size = chunk_size or chunk_rows(d, self.n_clusters, device)
        scores = mm.ScoreMap(mm.Params.of_model(self), device=device, dtype=dtype)
        eta = torch.as_tensor(self.dual_, device=device, dtype=dtype)
        for start in range(0, n, size):
            stop = min(start + size, n)
            rows = prepare_rows(
                X[start:stop],
                np.ones(stop - start),
                mean,
                whitening,
                device=device,
                dtype=dtype,
                chunk_size=size,
            )
            q, _ = dual.soft_assignments(scores(rows, 0), eta, self.temperature)
            yield slice(start, stop), q

    def predict(self, X):
        """Index of the most probable cluster for each row, shape (n_samples,)."""
        labels = [torch.argmax(q, dim=1).cpu() for _, q in self.iter_proba(X)]
        return torch.cat(labels).numpy() if labels else np.zeros(0, dtype=np.int64)

    def transform(self, X):
        """The corrected points on the sphere x_i, as the fit sees them (same kind as X).

        Returns
        -------
        x : ndarray or Tensor of shape (n_samples, n_features), unit rows
        """
        self._check_fitted()
        X = _check_array(X, n_features=self.n_features_in_)
        device = resolve_device(self.device, X)
        mean, whitening = self.transform_.correction()
        rows = prepare_rows(
            X,
            np.ones(X.shape[0]),
            mean,
            whitening,
            device=device,
            dtype=compute_dtype(X),
            chunk_size=chunk_rows(X.shape[1], self.n_clusters, device),
        )
        x = torch.cat([rows.points(j) for j in range(len(rows))])
        return x.to(X.device) if isinstance(X, torch.Tensor) else x.cpu().numpy()

    def _check_fitted(self):
        if not hasattr(self, "mean_directions_"):
            raise ValueError("this GEM instance is not fitted yet; call fit first")

    # ------------------------------------------------------------------ persistence
    def save(self, path, *, metadata=None):
        """Write ``path/model.safetensors`` and ``path/model.json`` (no pickle), atomically.

        ``metadata``: extra JSON-serialisable information stored under "metadata".
        """
        self._check_fitted()
        return model_files.save_model(self, path, metadata=metadata)

    @classmethod
    def load(cls, path):
        """Load a model written by :meth:`save` (checks format and shapes)."""
        return model_files.load_model(cls, path)


class _Run:
    """One initialisation of the MM algorithm."""

    def __init__(self, est: GEM, rows, log_prior, device, dtype, rng):
        self.est, self.rows = est, rows
        self.log_prior, self.device, self.dtype, self.rng = log_prior, device, dtype, rng
        self.T = float(est.temperature)
        self.lam = float(est.balance)
        self.tied = est.concentration == "tied"
        self.A = rows.total_weight
        self.K = est.n_clusters
        self._scores = None

    def score_map(self, params):
        return mm.ScoreMap(params, device=self.device, dtype=self.dtype)

    def fit(self) -> dict:
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
        new, empty = mm.update_parameters(stats, params, tied=self.tied)
        if empty:
            order = np.argsort(stats.row_lse, kind="stable")[: len(empty)]
            new.mean_directions[empty] = self.rows.gather(order)
        return new, [(iteration, int(k)) for k in empty]

    def _initial_directions(self) -> np.ndarray:
        init = self.est.init
        if not isinstance(init, str):
            init = np.asarray(init, dtype=np.float64)
            return init / np.linalg.norm(init, axis=1, keepdims=True)
        n = self.rows.n_rows
        sample = np.sort(self.rng.choice(n, size=min(n, max(20_000, 100 * self.K)), replace=False))
        x = self.rows.gather(sample)
        w = np.concatenate([a.cpu().numpy() for a in self.rows.weight])[sample]
        if init == "random":
            idx = self.rng.choice(len(sample), size=self.K, replace=False, p=w / w.sum())
            return x[idx]
        return spherical_kmeans_plus_plus(x, w, self.K, self.rng)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_array(X, n_features=None, *, check_invalid_rows=True):
    """Validate a 2-D float array (numpy or torch); invalid rows raise naming the rows.

    ``check_invalid_rows=False`` leaves the NaN/Inf/zero-row scan to the caller (``fit``:
    SphereTransform.fit makes it in the pass that computes the mean direction).
    """
    if isinstance(X, torch.Tensor):
        if not torch.is_floating_point(X):
            X = X.to(torch.float32)
    else:
        X = np.asarray(X)
        if X.dtype == object or not np.issubdtype(X.dtype, np.number):
            raise ValueError(f"embeddings must be a numeric array, got dtype {X.dtype}")
        if not np.issubdtype(X.dtype, np.floating):
            X = X.astype(np.float32)
    if X.ndim != 2:
        raise ValueError(
            f"embeddings must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}"
        )
    n, d = X.shape
    if n == 0:
        raise ValueError("no rows to fit: the embeddings array is empty")
    if d < 2:
        raise ValueError(f"embeddings need at least 2 dimensions to lie on a sphere, got d = {d}")
    if n_features is not None and d != n_features:
        raise ValueError(f"X has {d} features, but this GEM was fitted with {n_features}")
    if check_invalid_rows:
        check_rows(X, "the embeddings")
    return X
