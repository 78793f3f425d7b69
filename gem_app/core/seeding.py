"""Initial mean directions for mixtures on the sphere."""

from __future__ import annotations

import numpy as np


def spherical_kmeans_plus_plus(x: np.ndarray, w: np.ndarray, K: int, rng) -> np.ndarray:
    """Greedy spherical k-means++ seeding with the cosine distance 1 - mu.x.

    As scikit-learn's k-means++: each new centre is the best (lowest weighted
    potential) of 2 + log(K) candidates drawn by D^2 sampling.

    Parameters
    ----------
    x : ndarray of shape (n, d), unit rows
    w : ndarray of shape (n,), weights >= 0, at least K of them > 0
        (rows of weight 0 are never chosen)

    Returns
    -------
    centres : ndarray of shape (K, d)
    """
    n = len(x)
    trials = 2 + int(np.log(K))
    x32 = x.astype(np.float32)
    first = rng.choice(n, p=w / w.sum())
    centres = [first]
    dist = np.maximum(1.0 - x32 @ x32[first], 0.0).astype(np.float64)
    for _ in range(1, K):
        p = w * dist
        total = p.sum()
        if total <= 0:  # every point of positive weight is a centre already: take another
            rest = np.setdiff1d(np.flatnonzero(w > 0), centres)
            centres.append(int(rng.choice(rest)))
            continue
        candidates = rng.choice(n, size=trials, p=p / total)
        cand_dist = np.maximum(1.0 - x32 @ x32[candidates].T, 0.0)
        new_dist = np.minimum(dist[:, None], cand_dist)
        best = int(np.argmin(w @ new_dist))
        centres.append(int(candidates[best]))
        dist = new_dist[:, best]
    return x[np.array(centres)]
