"""The mixture chosen on Mix & Export, seen per cluster (Map's "chosen weight" colouring).

The mixture weights ``w_d`` are over domains: the level-1 clusters, or the leaves of the
fit's taxonomy, which may split a cluster into children or merge several clusters into one
node. The map colours documents by their cluster, so the weights are carried over to the
clusters by one rule: **each domain's weight is spread over its documents in proportion to
their tokens, and a cluster receives what lands on its documents**,

    c_k = sum_d w_d * T_dk / T_d,

with ``T_dk`` the tokens of domain d in cluster k and ``T_d = sum_k T_dk``. So ``c = w``
when the domains are the clusters; a split cluster gets the sum of its children's weights;
a merged node's weight is shared by its clusters in proportion to their tokens; an excluded
domain gives 0. ``sum_k c_k = sum_d w_d`` (1 for a mixture). Before any mixture is chosen,
the map shows the default mixture (tau = 1): the clusters' natural token shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gem_app.utils.validation import check_int

__all__ = ["ChosenWeights", "cluster_weights", "natural_cluster_weights"]


def cluster_weights(
    document_domain, domain_weights, clusters, tokens, n_clusters: int
) -> np.ndarray:
    """Per-cluster share of a mixture over domains, ``c_k = sum_d w_d T_dk / T_d``.

    Parameters
    ----------
    document_domain : array-like of int, shape (n,)
        Domain index of each document (into ``domain_weights``).
    domain_weights : array-like of float, shape (n_domains,)
        The mixture weights ``w_d`` (>= 0).
    clusters : array-like of int, shape (n,)
        Hard cluster of each document, in ``0 .. n_clusters - 1``.
    tokens : array-like of float, shape (n,)
        Tokens of each document (>= 0).
    n_clusters : int >= 1

    Returns
    -------
    ndarray of float64, shape (n_clusters,)
        A domain without tokens passes no weight on.
    """
    n_clusters = check_int(n_clusters, "n_clusters", minimum=1)
    domain = np.asarray(document_domain, dtype=np.int64)
    weights = np.asarray(domain_weights, dtype=np.float64)
    clusters = np.asarray(clusters, dtype=np.int64)
    tokens = np.asarray(tokens, dtype=np.float64)
    n = domain.shape[0]
    if weights.ndim != 1 or domain.shape != (n,) or clusters.shape != (n,) or tokens.shape != (n,):
        raise ValueError(
            f"document_domain {domain.shape}, clusters {clusters.shape} and tokens {tokens.shape} "
            f"must be 1-D of one length, domain_weights {weights.shape} 1-D"
        )
    if n and (domain.min() < 0 or domain.max() >= weights.shape[0]):
        raise ValueError(
            f"document_domain must be in 0..{weights.shape[0] - 1}, "
            f"got {domain.min()}..{domain.max()}"
        )
    if n and (clusters.min() < 0 or clusters.max() >= n_clusters):
        raise ValueError(
            f"clusters must be in 0..{n_clusters - 1}, got {clusters.min()}..{clusters.max()}"
        )
    return _spread(domain, weights, clusters, tokens, n_clusters)


def _spread(domain, weights, clusters, tokens, n_clusters: int) -> np.ndarray:
    """``sum_i [k_i = k] w_{d_i} t_i / T_{d_i}`` for every cluster k (checked inputs)."""
    domain_tokens = np.bincount(domain, weights=tokens, minlength=weights.shape[0])
    per_token = np.divide(
        weights, domain_tokens, out=np.zeros_like(weights), where=domain_tokens > 0
    )
    return np.bincount(clusters, weights=per_token[domain] * tokens, minlength=n_clusters)


def natural_cluster_weights(cluster_tokens) -> np.ndarray:
    """The default mixture (tau = 1) per cluster: each cluster's share of the tokens, (K,)."""
    cluster_tokens = np.asarray(cluster_tokens, dtype=np.float64)
    total = cluster_tokens.sum()
    if total <= 0:
        return np.full(cluster_tokens.shape, 1.0 / max(cluster_tokens.size, 1))
    return cluster_tokens / total


@dataclass(frozen=True)
class ChosenWeights:
    """A mixture chosen on Mix & Export, per cluster of the fit it was chosen for.

    Attributes
    ----------
    fit : str
        Name of the fit.
    version : str
        The domains it was chosen over: the checksum of the fit's taxonomy file, ``""`` for the
        clusters (:func:`gem_app.app.state.domains_key`). A taxonomy edit changes it, after
        which the domains, and so the weights, may differ; a study committed to the fit does not.
    weights : ndarray of shape (n_clusters,)
        :func:`cluster_weights` of the mixture.
    summary : str
        How the mixture was chosen, for a caption (``"tau = 2"``).
    report : gem_app.mixing.weights.MixingReport, optional
        The mixture over its domains (Evaluate studies it as the curator's current mixture).
    """

    fit: str
    version: str
    weights: np.ndarray
    summary: str = ""
    report: object = None

    def applies_to(self, fit: str, version: str, n_clusters: int) -> bool:
        """True when these weights were chosen for this version of this fit."""
        return self.fit == fit and self.version == version and self.weights.shape == (n_clusters,)
