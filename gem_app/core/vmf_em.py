"""Classic EM for a mixture of von Mises-Fisher distributions with a learned prior.

The "cluster-collapse-prone" baseline of GEM: the prior pi is re-estimated as the cluster
masses every M-step, so small clusters can starve and collapse (they are frozen with weight 0
and listed in ``collapsed_``). It works on the same anisotropy-corrected points as GEM
(:class:`gem_app.core.sphere.SphereTransform`). Also the helpers that turn any hard clustering into
a vMF mixture: :func:`fit_vmf_to_labels` and :func:`vmf_log_likelihood` (held-out likelihoods).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from gem_app.core.row_checks import check_embeddings, check_rows, check_sample_weight
from gem_app.core.seeding import spherical_kmeans_plus_plus
from gem_app.core.sphere import SphereTransform
from gem_app.core.vmf import log_normalizer, solve_kappa
from gem_app.utils.validation import NumberInterval

__all__ = ["VMFMixture", "check_matrix", "fit_vmf_to_labels", "vmf_log_likelihood"]

_DEAD_MASS = 1e-10  # a cluster whose share of the mass falls below this has collapsed


def vmf_log_likelihood(x, mean_directions, concentrations, log_weights) -> np.ndarray:
    """Per-row log density of a vMF mixture, ``log sum_k w_k C_d(kappa_k) exp(kappa_k mu_k.x)``.

    Parameters
    ----------
    x : ndarray, shape (N, d), unit rows
    mean_directions : ndarray, shape (K, d), unit rows
    concentrations : ndarray, shape (K,)
    log_weights : ndarray, shape (K,)
        Log mixture weights (``-inf`` for a component with no weight).

    Returns
    -------
    ndarray of float64, shape (N,)
    """
    return logsumexp(_component_scores(x, mean_directions, concentrations, log_weights), axis=1)


def _component_scores(x, mean_directions, concentrations, log_weights) -> np.ndarray:
    """``s_ik = log C_d(kappa_k) + kappa_k mu_k.x_i + log w_k``, shape (N, K), float64."""
    x = np.asarray(x, dtype=np.float64)
    kappa = np.asarray(concentrations, dtype=np.float64)
    log_c = log_normalizer(x.shape[1], kappa)
    return (x @ np.asarray(mean_directions, dtype=np.float64).T) * kappa + log_c + log_weights


def _vmf_m_step(x, q, weight, concentration: str):
    """Weighted (mu, kappa, masses) of a vMF mixture from soft (or one-hot) assignments q.

    Parameters
    ----------
    x : (N, d) unit rows; q : (N, K); weight : (N,) masses a_i > 0.

    Returns
    -------
    mu : (K, d), kappa : (K,), masses : (K,) summing to 1 (``n_k / A``).
    A cluster with no mass keeps a zero direction and kappa 0 (the caller decides).
    """
    wq = q * weight[:, None]
    n_k = wq.sum(axis=0)
    resultants = wq.T @ x
    lengths = np.linalg.norm(resultants, axis=1)
    alive = lengths > 0
    mu = np.zeros_like(resultants)
    mu[alive] = resultants[alive] / lengths[alive, None]
    d = x.shape[1]
    if concentration == "tied":
        kappa = np.full(len(n_k), float(solve_kappa(d, lengths.sum() / n_k.sum())))
    else:
        rbar = np.divide(lengths, n_k, out=np.zeros_like(lengths), where=n_k > 0)
        kappa = solve_kappa(d, np.minimum(rbar, 1.0))
    return mu, kappa, n_k / n_k.sum()


def fit_vmf_to_labels(x, labels, sample_weight=None, concentration="per-cluster"):
    """A vMF per cluster of a hard clustering (maximum likelihood), with mass weights.

    Parameters
    ----------
    x : ndarray, shape (N, d), unit rows (already on the sphere)
    labels : ndarray of int, shape (N,)
        Any integer ids (``-1`` outliers included, as one more component).
    sample_weight : ndarray, shape (N,), optional
    concentration : {"per-cluster", "tied"}

    Returns
    -------
    ids : ndarray, shape (K,), the distinct labels
    mean_directions : ndarray, shape (K, d)
    concentrations : ndarray, shape (K,)
    weights : ndarray, shape (K,), the clusters' shares of the mass
    """
    x = np.asarray(x, dtype=np.float64)
    ids, index = np.unique(np.asarray(labels), return_inverse=True)
    weight = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    onehot = np.zeros((len(x), len(ids)))
    onehot[np.arange(len(x)), index] = 1.0
    mu, kappa, masses = _vmf_m_step(x, onehot, weight, concentration)
    return ids, mu, kappa, masses


# --------------------------------------------------------------------------- vMF-EM
class VMFMixture(ClusterMixin, BaseEstimator):
    """Classic EM for a mixture of von Mises-Fisher distributions (Banerjee et al., 2005).

    With ``learn_prior=True`` the prior ``pi`` is re-estimated every M-step as the cluster
    masses, so a cluster that loses mass also loses prior and can collapse; this is the
    behaviour GEM's fixed prior plus entropy term is designed to avoid.

    Parameters
    ----------
    n_clusters : int, default=8
    concentration : {"per-cluster", "tied"}, default="per-cluster"
    learn_prior : bool, default=True
        False keeps the uniform prior (then the fit is GEM with balance=0, temperature=1).
    max_iter : int, default=100
    tol : float, default=1e-6
        Stop when the relative change of the mean log-likelihood is below tol.
    n_init : int, default=1
        Restarts; the one with the highest log-likelihood is kept.
    init : "k-means++" or array-like of shape (n_clusters, n_features)
        Initial directions (an array is in the corrected sphere coordinates).
    center, whiten : bool
        The anisotropy correction of :class:`~gem_app.core.sphere.SphereTransform` (rows
        with no direction left after it are refused, as by GEM).
    random_state : int, numpy RandomState or Generator, or None
        Seeds the initialisation (an int: the same fit every time), as in scikit-learn.

    Attributes
    ----------
    mean_directions_ : ndarray of shape (n_clusters, n_features)
    concentrations_ : ndarray of shape (n_clusters,)
    weights_ : ndarray of shape (n_clusters,)
        The prior pi (learned, or uniform); sums to 1. Collapsed clusters have 0.
    cluster_masses_ : ndarray of shape (n_clusters,)
    labels_ : ndarray of shape (n_samples,)
    log_likelihood_ : float
        Mean (weighted) log-likelihood of the training rows.
    log_likelihood_history_ : list of float
    collapsed_ : list of int
        Clusters whose mass fell below 1e-10 (frozen with weight 0).
    transform_ : SphereTransform
    n_iter_ : int
    converged_ : bool
    n_features_in_ : int
    """

    _parameter_constraints: dict = {
        "n_clusters": [NumberInterval(Integral, 1, None, closed="left")],
        "concentration": [StrOptions({"tied", "per-cluster"})],
        "learn_prior": ["boolean"],
        "max_iter": [NumberInterval(Integral, 1, None, closed="left")],
        "tol": [NumberInterval(Real, 0, None, closed="left")],
        "n_init": [NumberInterval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"k-means++"}), "array-like"],
        "center": ["boolean"],
        "whiten": ["boolean"],
        "random_state": ["random_state", np.random.Generator],
    }

    def __init__(
        self,
        n_clusters=8,
        *,
        concentration="per-cluster",
        learn_prior=True,
        max_iter=100,
        tol=1e-6,
        n_init=1,
        init="k-means++",
        center=True,
        whiten=False,
        random_state=None,
    ):
        self.n_clusters = n_clusters
        self.concentration = concentration
        self.learn_prior = learn_prior
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.init = init
        self.center = center
        self.whiten = whiten
        self.random_state = random_state

    def _check_data_params(self, n_positive: int, n_features: int) -> None:
        """The parameter checks that depend on the data (the rest are the constraints)."""
        if self.n_clusters > n_positive:
            raise ValueError(
                f"n_clusters={self.n_clusters} is larger than the {n_positive} rows of X "
                "with a positive weight"
            )
        if not isinstance(self.init, str) and np.shape(self.init) != (
            self.n_clusters,
            n_features,
        ):
            raise ValueError(
                f"init array must have shape ({self.n_clusters}, {n_features}), "
                f"got {np.shape(self.init)}"
            )

    def fit(self, X, y=None, sample_weight=None):
        """Fit the mixture by EM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional
            Masses a_i >= 0 (tokens), not all zero; 1 when None.

        Returns
        -------
        self
        """
        self._validate_params()
        X = np.asarray(check_embeddings(X, self, scan_rows=False))  # fit scans them
        n, d = X.shape
        weight = check_sample_weight(sample_weight, n)
        self._check_data_params(int(np.count_nonzero(weight)), d)
        transform = SphereTransform(center=self.center, whiten=self.whiten)
        x = np.asarray(transform.fit_transform(X, sample_weight=weight), dtype=np.float64)
        rng = np.random.default_rng(self.random_state)
        best = None
        for _ in range(self.n_init):
            result = self._em(x, weight, rng)
            if best is None or result["log_likelihood"] > best["log_likelihood"]:
                best = result
        for key, value in best.items():
            setattr(self, f"{key}_", value)
        self.transform_ = transform
        return self

    def _em(self, x, weight, rng) -> dict:
        K = self.n_clusters
        if isinstance(self.init, str):
            mu = spherical_kmeans_plus_plus(x, weight, K, rng)
        else:
            init = np.asarray(self.init, dtype=np.float64)
            mu = init / np.linalg.norm(init, axis=1, keepdims=True)
        # First M-step from the hard nearest-direction assignment.
        q = np.eye(K)[np.argmax(x @ mu.T, axis=1)]
        log_pi = np.full(K, -np.log(K))
        history: list[float] = []
        converged = False
        n_iter = 0
        for n_iter in range(1, self.max_iter + 1):  # noqa: B007 (n_iter is reported)
            mu, kappa, log_pi = self._m_step(x, q, weight, mu, log_pi)
            scores = _component_scores(x, mu, kappa, log_pi)
            log_norm = logsumexp(scores, axis=1, keepdims=True)
            q = np.exp(scores - log_norm)
            history.append(float(weight @ log_norm[:, 0] / weight.sum()))
            if len(history) > 1 and abs(history[-1] - history[-2]) <= self.tol * max(
                1.0, abs(history[-1])
            ):
                converged = True
                break
        masses = (q * weight[:, None]).sum(axis=0) / weight.sum()
        return {
            "mean_directions": mu,
            "concentrations": kappa,
            "weights": np.exp(log_pi),
            "cluster_masses": masses,
            "labels": np.argmax(q, axis=1),
            "log_likelihood": history[-1],
            "log_likelihood_history": history,
            "collapsed": [int(k) for k in np.flatnonzero(masses < _DEAD_MASS)],
            "n_iter": n_iter,
            "converged": converged,
        }

    def _m_step(self, x, q, weight, old_mu, old_log_pi):
        mu, kappa, masses = _vmf_m_step(x, q, weight, self.concentration)
        dead = masses < _DEAD_MASS
        mu[dead] = old_mu[dead]  # a collapsed cluster keeps its last direction, weight 0
        kappa[dead] = 1e-3
        if not self.learn_prior:
            return mu, kappa, old_log_pi
        with np.errstate(divide="ignore"):
            log_pi = np.where(dead, -np.inf, np.log(np.where(dead, 1.0, masses)))
        return mu, kappa, log_pi - logsumexp(log_pi)

    def _points(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = check_embeddings(X, self, reset=False, scan_rows=False)
        return np.asarray(self.transform_.transform(np.asarray(X)), dtype=np.float64)

    def _scores(self, X) -> np.ndarray:
        check_is_fitted(self)
        with np.errstate(divide="ignore"):
            log_w = np.log(self.weights_)
        return _component_scores(
            self._points(X), self.mean_directions_, self.concentrations_, log_w
        )

    def predict_proba(self, X) -> np.ndarray:
        """Posterior responsibilities, shape (n_samples, n_clusters); rows sum to 1."""
        s = self._scores(X)
        return np.exp(s - logsumexp(s, axis=1, keepdims=True))

    def predict(self, X) -> np.ndarray:
        """Most probable cluster per row, shape (n_samples,)."""
        return np.argmax(self._scores(X), axis=1)

    def score_samples(self, X) -> np.ndarray:
        """Log density of each row under the mixture (on the corrected sphere), shape (n_samples,)."""
        return logsumexp(self._scores(X), axis=1)


def check_matrix(X) -> np.ndarray:
    """X as a 2-D numeric numpy array whose rows can all be put on the sphere (ValueError naming
    the bad rows otherwise)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.dtype.kind not in "biuf":
        raise ValueError(f"X must be a 2-D numeric array, got shape {X.shape} and dtype {X.dtype}")
    check_rows(X)
    return X


# --------------------------------------------------------------------------- the baselines
