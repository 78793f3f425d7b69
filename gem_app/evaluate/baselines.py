"""Baseline clusterings behind one interface, to compare GEM against.

``run_baseline(name, X, n_clusters, ...)`` runs one of

* ``"kmeans"``: Euclidean k-means (scikit-learn) on the raw embeddings;
* ``"spherical-kmeans"``: faiss k-means with ``spherical=True`` on the unit rows;
* ``"vmf-em"``: classic EM for a vMF mixture with a *learned* prior (``pi`` re-estimated
  as the cluster masses every M-step, which lets clusters starve and collapse), on the
  same anisotropy-corrected points as GEM (:class:`gem_app.core.sphere.SphereTransform`);
* ``"bertopic"``: the BERTopic pipeline, UMAP to 5 cosine dimensions then HDBSCAN; the
  number of clusters is not controllable and HDBSCAN's outliers keep the label ``-1``;

and returns a :class:`BaselineResult` with hard labels and, where the method has them,
soft assignments. :func:`cluster_balance` and :func:`seed_stability` are the balance and
stability measures of bench/quality.py.
"""

from __future__ import annotations

import itertools
import numbers
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from gem_app.core.row_checks import check_sample_weight
from gem_app.core.vmf_em import VMFMixture, check_matrix
from gem_app.utils.information import entropy
from gem_app.utils.optional import require_faiss, require_hdbscan, require_umap
from gem_app.utils.validation import check_int

__all__ = ["BASELINES", "BaselineResult", "cluster_balance", "run_baseline", "seed_stability"]


@dataclass
class BaselineResult:
    """Output of :func:`run_baseline`.

    Attributes
    ----------
    name : str
    labels : ndarray of int64, shape (N,)
        Cluster ids ``0 .. n_clusters_found - 1``; ``-1`` marks outliers (bertopic only).
    proba : ndarray of float64, shape (N, K), or None
        Soft assignments (rows sum to 1) for methods that have them.
    n_outliers : int
    seconds : float
        Wall time of the fit.
    model : object
        The fitted estimator (KMeans, faiss.Kmeans, VMFMixture, or (UMAP, HDBSCAN)).
    """

    name: str
    labels: np.ndarray
    proba: np.ndarray | None
    n_outliers: int
    seconds: float
    model: Any = field(default=None, repr=False)


# --------------------------------------------------------------------------- vMF maths
def _seed(random_state) -> int:
    """An int seed for libraries that want one (faiss, UMAP)."""
    if random_state is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    if isinstance(random_state, numbers.Integral):
        return int(random_state)
    return int(np.random.default_rng(random_state).integers(2**31 - 1))


def _run_kmeans(X, n_clusters, weight, random_state, **params):
    model = KMeans(n_clusters=n_clusters, random_state=_seed(random_state), **params)
    labels = model.fit_predict(np.asarray(X, dtype=np.float32), sample_weight=weight)
    return labels, None, model


def _run_spherical_kmeans(X, n_clusters, weight, random_state, *, niter=25, **params):
    faiss = require_faiss()
    units = np.ascontiguousarray(X / np.linalg.norm(X, axis=1, keepdims=True), dtype=np.float32)
    params = {"min_points_per_centroid": 1, "max_points_per_centroid": len(units), **params}
    model = faiss.Kmeans(
        units.shape[1], n_clusters, niter=niter, seed=_seed(random_state), spherical=True, **params
    )
    model.train(units, weights=None if weight is None else weight.astype(np.float32))
    _, labels = model.index.search(units, 1)
    return labels[:, 0], None, model


def _run_vmf_em(X, n_clusters, weight, random_state, **params):
    model = VMFMixture(n_clusters, random_state=random_state, **params).fit(X, sample_weight=weight)
    q = model.predict_proba(X)
    return np.argmax(q, axis=1), q, model


def _run_bertopic(
    X, n_clusters, weight, random_state, *, min_cluster_size=10, n_neighbors=15, **params
):
    umap, hdbscan = require_umap(), require_hdbscan()
    reducer = umap.UMAP(
        n_components=5,
        n_neighbors=min(n_neighbors, len(X) - 1),
        min_dist=0.0,
        metric="cosine",
        random_state=_seed(random_state),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by setting random_state"
        reduced = reducer.fit_transform(np.asarray(X, dtype=np.float32))
    clusterer = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, **params)
    labels = clusterer.fit_predict(reduced)  # sample_weight: HDBSCAN has none (ignored)
    return labels, None, (reducer, clusterer)


BASELINES = {
    "kmeans": _run_kmeans,
    "spherical-kmeans": _run_spherical_kmeans,
    "vmf-em": _run_vmf_em,
    "bertopic": _run_bertopic,
}


def run_baseline(
    name, X, n_clusters, *, sample_weight=None, random_state=None, **params
) -> BaselineResult:
    """Run one baseline clustering.

    Parameters
    ----------
    name : {"kmeans", "spherical-kmeans", "vmf-em", "bertopic"}
    X : array-like of shape (N, d)
        Embeddings (raw; each method applies its own geometry, see the module docstring).
    n_clusters : int
        K, ``1 <= K <= N``. "bertopic" cannot be given K; it is still validated.
    sample_weight : array-like of shape (N,), optional
        Masses (tokens); used by every method except "bertopic".
    random_state : int, numpy Generator or None
    **params
        Passed to the method (e.g. ``min_cluster_size`` for "bertopic",
        ``concentration`` for "vmf-em").

    Returns
    -------
    BaselineResult
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    X = check_matrix(X)
    check_int(n_clusters, "n_clusters", minimum=1)
    if n_clusters > len(X):
        raise ValueError(f"n_clusters={n_clusters} is larger than the {len(X)} rows of X")
    weight = None if sample_weight is None else check_sample_weight(sample_weight, len(X))
    start = time.perf_counter()
    labels, proba, model = BASELINES[name](X, int(n_clusters), weight, random_state, **params)
    seconds = time.perf_counter() - start
    labels = np.asarray(labels, dtype=np.int64)
    return BaselineResult(name, labels, proba, int((labels < 0).sum()), seconds, model)


# --------------------------------------------------------------------------- measures
def cluster_balance(labels, weights=None, n_clusters=None) -> dict:
    """Balance of a clustering by mass.

    Parameters
    ----------
    labels : array-like of int, shape (N,); ``-1`` = outlier
    weights : array-like, shape (N,), optional (tokens)
    n_clusters : int, optional
        K requested; the entropy is normalised by ``log max(K, clusters found)`` so that
        empty (collapsed) clusters lower the balance.

    Returns
    -------
    dict with ``balance`` (H(rho) / log K, rho over the non-outlier clusters, 1 = equal
    masses), ``largest_share`` and ``outlier_share`` (shares of the total mass) and
    ``n_clusters_found`` (non-empty, non-outlier clusters).
    """
    labels = np.asarray(labels)
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = w.sum()
    inlier = labels >= 0
    _, index = np.unique(labels[inlier], return_inverse=True)
    masses = np.bincount(index, weights=w[inlier]) if inlier.any() else np.zeros(0)
    found = int((masses > 0).sum())
    k = max(found, n_clusters or 0)
    rho = masses[masses > 0] / masses.sum() if found else masses
    return {
        "balance": float(entropy(rho) / np.log(k)) if k > 1 else 1.0,
        "largest_share": float(masses.max() / total) if found else 0.0,
        "outlier_share": float(w[~inlier].sum() / total),
        "n_clusters_found": found,
    }


def seed_stability(labelings) -> float:
    """Mean pairwise adjusted Rand index between labelings of the same rows (>= 2 of them)."""
    labelings = [np.asarray(lab) for lab in labelings]
    if len(labelings) < 2:
        raise ValueError(f"seed stability needs at least 2 labelings, got {len(labelings)}")
    pairs = itertools.combinations(labelings, 2)
    return float(np.mean([adjusted_rand_score(a, b) for a, b in pairs]))
