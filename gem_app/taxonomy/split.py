"""The maths under :mod:`gem_app.taxonomy.tree`: GEM fits of one split, node statistics, BIC.

A *split* is one GEM fit on the documents of a node (the whole corpus for level 1),
giving the node's children. Everything here is pure computation on arrays.

Choosing K ("auto"): for every candidate K a GEM fit is scored by the Bayesian
information criterion of the vMF mixture it defines (mixing weights ``rho``)::

    BIC(K) = -2 sum_i w_i log sum_k rho_k f_k(x_i) + p(K) log n,
    w_i = n a_i / A,   p(K) = K (d - 1) + (1 if tied else K) + (K - 1),

on the corrected points ``x_i`` (lower is better). BIC is used rather than a held-out
objective because the GEM objective keeps rising with K on held-out data when d is
large, whereas the parameter penalty gives a curve with a minimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from gem_app.core.gem import GEM
from gem_app.core.vmf import log_normalizer, solve_kappa

__all__ = [
    "SplitFit",
    "candidate_ks",
    "choose_k",
    "fit_split",
    "mixture_bic",
    "resultant_concentration",
    "soft_resultants",
    "split_from_model",
]

#: The K values "auto" may consider (capped by the number of documents and max_k).
K_GRID = (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128, 192, 256)


@dataclass
class SplitFit:
    """One GEM split of a set of documents.

    Attributes
    ----------
    model : GEM
    q : ndarray of shape (n, K), float64
        Soft assignments of the split's documents.
    points : ndarray of shape (n, d), float64
        The corrected points ``x_i`` in the split's coordinates.
    labels : ndarray of shape (n,), int64
        Hard assignment (argmax of ``q`` as fitted).
    """

    model: GEM
    q: np.ndarray
    points: np.ndarray
    labels: np.ndarray

    @property
    def n_clusters(self) -> int:
        return int(self.q.shape[1])


def split_from_model(model: GEM, X, labels=None) -> SplitFit:
    """A :class:`SplitFit` from an already fitted GEM (``labels`` default: its ``labels_``)."""
    q = np.asarray(model.predict_proba(X), dtype=np.float64)
    q /= q.sum(axis=1, keepdims=True)
    points = np.asarray(model.transform(X), dtype=np.float64)
    labels = model.labels_ if labels is None else labels
    return SplitFit(model, q, points, np.asarray(labels, dtype=np.int64))


def fit_split(X, weights, n_clusters: int, **gem_params) -> SplitFit:
    """Fit GEM with ``n_clusters`` on the rows of X (token masses ``weights``).

    Parameters
    ----------
    X : ndarray of shape (n, d)
    weights : ndarray of shape (n,)
    n_clusters : int, 2 <= n_clusters <= n
    **gem_params
        Passed to :class:`GEM` (balance, temperature, random_state, concentration, ...).
    """
    X = np.asarray(X)
    if n_clusters < 2 or n_clusters > X.shape[0]:
        raise ValueError(
            f"a split needs 2 <= K <= documents, got K = {n_clusters} for {X.shape[0]} documents"
        )
    model = GEM(n_clusters, **gem_params).fit(X, sample_weight=weights)
    return split_from_model(model, X)


def soft_resultants(q, points, weights) -> tuple[np.ndarray, np.ndarray]:
    """``r_k = sum_i a_i q_ik x_i`` and ``n_k = sum_i a_i q_ik``.

    Parameters
    ----------
    q : ndarray of shape (n, K)
    points : ndarray of shape (n, d)
    weights : ndarray of shape (n,)

    Returns
    -------
    resultants : ndarray of shape (K, d), float64
    masses : ndarray of shape (K,), float64
    """
    aq = np.asarray(weights, dtype=np.float64)[:, None] * np.asarray(q, dtype=np.float64)
    return aq.T @ np.asarray(points, dtype=np.float64), aq.sum(axis=0)


def resultant_concentration(resultant, mass) -> np.ndarray:
    """vMF maximum-likelihood kappa from resultants: ``A_d(kappa) = ||r|| / n``.

    Parameters
    ----------
    resultant : ndarray of shape (K, d) or (d,)
    mass : ndarray of shape (K,) or float
        ``n_k``; a zero mass gives the smallest kappa (1e-3).

    Returns
    -------
    ndarray of shape (K,) or 0-d
    """
    resultant = np.asarray(resultant, dtype=np.float64)
    mass = np.asarray(mass, dtype=np.float64)
    d = resultant.shape[-1]
    norm = np.linalg.norm(resultant, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rbar = np.where(mass > 0, norm / np.where(mass > 0, mass, 1.0), 0.0)
    return solve_kappa(d, np.clip(rbar, 0.0, 1.0))


def n_parameters(n_clusters: int, n_features: int, tied: bool) -> int:
    """Free parameters of a K-component vMF mixture on ``S^{d-1}``."""
    kappas = 1 if tied else n_clusters
    return n_clusters * (n_features - 1) + kappas + (n_clusters - 1)


def mixture_bic(points, weights, mean_directions, concentrations, masses, *, tied: bool) -> float:
    """BIC of the vMF mixture (see the module docstring); lower is better.

    Parameters
    ----------
    points : ndarray of shape (n, d), unit rows
    weights : ndarray of shape (n,)
    mean_directions : ndarray of shape (K, d)
    concentrations : ndarray of shape (K,)
    masses : ndarray of shape (K,)
        Mixing weights ``rho`` (renormalised; empty components get 1e-300).
    tied : bool
        One shared kappa (counts one parameter) or one per cluster.
    """
    points = np.asarray(points, dtype=np.float64)
    n, d = points.shape
    mu = np.asarray(mean_directions, dtype=np.float64)
    kappa = np.asarray(concentrations, dtype=np.float64)
    rho = np.maximum(np.asarray(masses, dtype=np.float64), 1e-300)
    rho = rho / rho.sum()
    w = np.asarray(weights, dtype=np.float64)
    w = w * (n / w.sum())
    log_density = np.log(rho) + log_normalizer(d, kappa) + (points @ mu.T) * kappa
    log_likelihood = float(w @ logsumexp(log_density, axis=1))
    return -2.0 * log_likelihood + n_parameters(mu.shape[0], d, tied) * np.log(n)


def split_bic(split: SplitFit, weights) -> float:
    """:func:`mixture_bic` of a fitted split."""
    model = split.model
    return mixture_bic(
        split.points,
        weights,
        model.mean_directions_,
        model.concentrations_,
        model.cluster_masses_,
        tied=model.concentration == "tied",
    )


def candidate_ks(n_documents: int, max_k: int) -> list[int]:
    """The grid ``K_GRID`` restricted to ``2 <= K <= min(max_k, n_documents)``."""
    if max_k < 2:
        raise ValueError(f"max_auto_k must be >= 2, got {max_k}")
    top = min(max_k, n_documents)
    return [k for k in K_GRID if k <= top]


def choose_k(X, weights, candidates, *, fitted=None, **gem_params):
    """Fit every candidate K and keep the one with the lowest BIC.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    weights : ndarray of shape (n,)
    candidates : sequence of int
    fitted : dict of int to SplitFit, optional
        Splits already at hand (not refitted).
    **gem_params
        Passed to :class:`GEM`.

    Returns
    -------
    best : SplitFit
    curve : dict of int to float
        ``K -> BIC``.
    """
    if not candidates:
        raise ValueError(f"no candidate K for {len(X)} documents (need at least 2)")
    fitted = dict(fitted or {})
    curve: dict[int, float] = {}
    best_k, best = None, None
    for k in candidates:
        split = fitted[k] if k in fitted else fit_split(X, weights, k, **gem_params)
        curve[int(k)] = float(split_bic(split, weights))
        if best is None or curve[k] < curve[best_k]:
            best_k, best = k, split
    return best, curve
