"""The maths under :mod:`gem_app.taxonomy.tree`: GEM fits of one split and node statistics.

A *split* is one GEM fit on the documents of a node (the whole corpus for level 1),
giving the node's children. Everything here is pure computation on arrays. Choosing K
("auto") scores every candidate fit by its BIC (:mod:`gem_app.evaluate.selection`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from gem_app.core.gem import GEM
from gem_app.core.vmf import solve_kappa
from gem_app.evaluate.selection import gem_bic
from gem_app.taxonomy.vocabulary import build_vocabulary

__all__ = [
    "SplitContext",
    "SplitFit",
    "choose_k",
    "fit_split",
    "resultant_concentration",
    "soft_resultants",
    "split_bic",
    "split_from_model",
]


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


def split_bic(split: SplitFit, weights) -> float:
    """:func:`gem_app.evaluate.selection.gem_bic` of a fitted split."""
    return gem_bic(split.model, split.points, weights)


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


class SplitContext:
    """What splits need from the run: embeddings, tokens and the corpus vocabulary."""

    def __init__(self, run, *, min_df, max_df):
        self.run = run
        self.X = run.embeddings
        self.texts = run.frame["text"].tolist()
        presence, self.terms, self.note = build_vocabulary(self.texts, min_df=min_df, max_df=max_df)
        self.presence = sp.csr_matrix(presence)
