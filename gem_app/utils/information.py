"""Shannon entropy and Kullback-Leibler divergence of probability vectors, in nats."""

from __future__ import annotations

import numpy as np

__all__ = ["entropy", "kl_divergence"]


def entropy(p) -> float:
    """``H(p) = -sum_k p_k log p_k`` in nats, with ``0 log 0 = 0``.

    Parameters
    ----------
    p : array-like of shape (K,)
        A probability vector (not renormalised here).
    """
    p = np.asarray(p, dtype=np.float64)
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def kl_divergence(p, q) -> float:
    """``KL(p || q) = sum_k p_k log(p_k / q_k)`` in nats; ``inf`` where ``p`` has mass and ``q`` none.

    Parameters
    ----------
    p, q : array-like of shape (K,)
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    nz = p > 0
    if np.any(q[nz] <= 0):
        return float("inf")
    return float((p[nz] * (np.log(p[nz]) - np.log(q[nz]))).sum())
