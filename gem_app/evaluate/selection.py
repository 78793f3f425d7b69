"""Model selection: the Bayesian information criterion of a vMF mixture and a K sweep.

For a K-component vMF mixture on ``S^{d-1}`` with mixing weights ``rho``::

    BIC(K) = -2 sum_i w_i log sum_k rho_k f_k(x_i) + p(K) log n,
    w_i = n a_i / A,   p(K) = K (d - 1) + (1 if tied else K) + (K - 1),

on the corrected points ``x_i`` (lower is better). BIC is used rather than a held-out
objective because the GEM objective keeps rising with K on held-out data when d is
large, whereas the parameter penalty gives a curve with a minimum.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from gem_app.core.gem import GEM
from gem_app.core.vmf import log_normalizer
from gem_app.io.corpus import load_corpus
from gem_app.io.embeddings import corpus_embeddings

__all__ = ["K_GRID", "candidate_ks", "gem_bic", "mixture_bic", "n_parameters", "sweep_k"]

#: The K values "auto" may consider (capped by the number of documents and max_k).
K_GRID = (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128, 192, 256)


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


def gem_bic(model: GEM, points, weights) -> float:
    """:func:`mixture_bic` of a fitted GEM at its corrected points (``model.transform(X)``)."""
    return mixture_bic(
        points,
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


def sweep_k(
    data,
    ks,
    *,
    embeddings=None,
    text_col="text",
    id_col="id",
    label_col=None,
    tokens_col=None,
    progress=None,
    max_iter: int = 50,
    **gem_params,
) -> pd.DataFrame:
    """Fit GEM for every K in ``ks`` on a corpus and score each fit by :func:`gem_bic`.

    Returns
    -------
    DataFrame with columns k, bic, log_likelihood (token-weighted mean log-density of the
    mixture at the corrected points), objective; one row per K, in the order of ``ks``.
    """
    corpus = load_corpus(
        data, text_col=text_col, id_col=id_col, label_col=label_col, tokens_col=tokens_col
    )
    frame, X, _ = corpus_embeddings(corpus, embeddings)
    weights = frame["tokens"].to_numpy(dtype=np.float64)
    records = []
    for i, k in enumerate(ks):
        if progress is not None:
            progress(i, k)
        model = GEM(int(k), max_iter=max_iter, **gem_params).fit(X, sample_weight=weights)
        bic = gem_bic(model, model.transform(X), weights)
        n_params = n_parameters(int(k), X.shape[1], model.concentration == "tied")
        records.append(
            {
                "k": int(k),
                "bic": bic,
                "log_likelihood": (n_params * np.log(len(X)) - bic) / (2 * len(X)),
                "objective": float(model.objective_),
            }
        )
    return pd.DataFrame(records)
