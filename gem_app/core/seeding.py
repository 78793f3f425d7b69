"""Initial mean directions for mixtures on the sphere."""

from __future__ import annotations

import numpy as np
import torch

from gem_app.core.threads import chunk_workers, map_chunks

__all__ = ["spherical_kmeans_plus_plus"]

_BLOCK_ROWS = 4096  # rows per task of the candidate-distance pass


def spherical_kmeans_plus_plus(x: np.ndarray, w: np.ndarray, K: int, rng) -> np.ndarray:
    """Greedy spherical k-means++ seeding with the cosine distance 1 - mu.x.

    As scikit-learn's k-means++: each new centre is the best (lowest weighted
    potential) of 2 + log(K) candidates drawn by D^2 sampling. The distances to the
    candidates are computed in float32 by row blocks on the worker threads of
    :mod:`gem_app.core.threads`; the distances kept and the potentials are float64, summed
    block by block in order (the result does not depend on the threads).

    Parameters
    ----------
    x : ndarray of shape (n, d), unit rows
    w : ndarray of shape (n,), weights >= 0, at least K of them > 0
        (rows of weight 0 are never chosen)
    K : int
    rng : numpy.random.Generator

    Returns
    -------
    centres : ndarray of shape (K, d)
    """
    n = len(x)
    trials = 2 + int(np.log(K))
    x32 = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    weight = torch.from_numpy(np.asarray(w, dtype=np.float64))
    blocks = [(a, min(a + _BLOCK_ROWS, n)) for a in range(0, n, _BLOCK_ROWS)]
    first = int(rng.choice(n, p=w / w.sum()))
    centres = [first]
    dist = _cosine_distances(x32, x32[[first]])[:, 0]

    def block_potentials(j: int, candidates: torch.Tensor):
        a, b = blocks[j]
        new = torch.minimum(dist[a:b, None], _cosine_distances(x32[a:b], candidates))
        return new, weight[a:b] @ new

    with chunk_workers("cpu"):
        for _ in range(1, K):
            p = (weight * dist).numpy()
            total = p.sum()
            if total <= 0:  # every point of positive weight is a centre already: take another
                rest = np.setdiff1d(np.flatnonzero(w > 0), centres)
                centres.append(int(rng.choice(rest)))
                continue
            candidates = rng.choice(n, size=trials, p=p / total)
            cand = x32[torch.as_tensor(candidates)]
            parts = map_chunks(lambda j, c=cand: block_potentials(j, c), len(blocks))
            potential = parts[0][1].clone()
            for _, part in parts[1:]:  # in block order
                potential += part
            best = int(torch.argmin(potential))
            centres.append(int(candidates[best]))
            dist = torch.cat([new[:, best] for new, _ in parts])
    return x[np.array(centres)]


def _cosine_distances(x32: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """max(0, 1 - x . c) for unit rows, computed in float32, returned as float64 (n, m)."""
    return (1.0 - x32 @ centres.T).clamp_(min=0.0).to(torch.float64)
