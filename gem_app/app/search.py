"""Semantic search over a fit: a query vector -> the most similar documents and clusters.

The query is embedded by the same offline encoder as the corpus (the page holds one shared
model) and then goes **through the fit's anisotropy correction** (``model.transform``: the
stored mean removed, whitening if any, back onto the unit sphere), like every document. The
similarity is the cosine on that corrected sphere: the geometry in which GEM found the
clusters and from which the map is drawn, so the nearest documents are the ones the map shows
next to each other, and the nearest clusters are the largest ``mu_k . x_q``. (On raw MiniLM
vectors every pair of documents has a cosine of about 0.2-0.4 from the common direction alone;
removing it spreads the similarities.)

The documents are scanned in chunks (``chunk_rows`` rows corrected and multiplied at a time,
the best ``k`` kept between chunks), so memory stays ``O(chunk_rows * d)`` at any N.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gem_app.utils.validation import check_int

__all__ = ["SearchHits", "embed_query", "search_documents"]


@dataclass(frozen=True)
class SearchHits:
    """The nearest documents and clusters of one query.

    Attributes
    ----------
    rows : ndarray of int64, shape (k,), most similar first
    similarity : ndarray of float64, shape (k,), cosine on the corrected sphere
    clusters : ndarray of int64, shape (n_clusters,), clusters by ``mu_k . x_q``, best first
    cluster_similarity : ndarray of float64, shape (n_clusters,)
    """

    rows: np.ndarray
    similarity: np.ndarray
    clusters: np.ndarray
    cluster_similarity: np.ndarray


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def _identity(block: np.ndarray) -> np.ndarray:
    return _unit(np.asarray(block, dtype=np.float64))


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, largest first (ties: lower index first)."""
    if k >= scores.size:
        part = np.arange(scores.size)
    else:
        part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


def embed_query(encoder, text: str, *, dim: int | None = None) -> np.ndarray:
    """The unit vector of a query from a sentence encoder (``encode(list) -> (1, d)``), (d,).

    ``dim``: the corpus embeddings' width; a different width raises a ValueError saying so.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("the search query is empty")
    vector = np.asarray(encoder.encode([text]), dtype=np.float64).reshape(-1)
    if dim is not None and vector.shape[0] != dim:
        raise ValueError(
            f"the encoder gives {vector.shape[0]}-d vectors and this fit's embeddings are "
            f"{dim}-d: semantic search needs the corpus embedded by the same encoder"
        )
    if not np.all(np.isfinite(vector)) or not np.linalg.norm(vector) > 0:
        raise ValueError("the encoder returned no direction for the query")
    return _unit(vector)


def search_documents(
    query,
    embeddings,
    *,
    k: int = 20,
    transform: Callable | None = None,
    mean_directions=None,
    chunk_rows: int = 65_536,
) -> SearchHits:
    """The ``k`` documents (and the clusters) most similar to a query vector.

    Parameters
    ----------
    query : array-like of shape (d,)
        The query's embedding (same encoder as ``embeddings``).
    embeddings : ndarray of shape (N, d)
        The fit's document embeddings (raw, as stored with the run).
    k : int >= 1
    transform : callable, optional
        Maps rows (m, d) to unit rows on the corrected sphere: the fitted model's
        ``transform`` (applied to the query and to every document). None: plain cosine.
    mean_directions : ndarray of shape (K, d), optional
        Unit cluster directions on the corrected sphere, for the nearest clusters.
    chunk_rows : int >= 1

    Returns
    -------
    SearchHits
    """
    k = check_int(k, "k", minimum=1)
    chunk_rows = check_int(chunk_rows, "chunk_rows", minimum=1)
    transform = _identity if transform is None else transform
    query = np.asarray(query, dtype=np.float64).reshape(1, -1)
    n, d = embeddings.shape
    if query.shape[1] != d:
        raise ValueError(f"the query has {query.shape[1]} dimensions, the embeddings {d}")
    q = np.asarray(transform(query.astype(embeddings.dtype)), dtype=np.float64).reshape(-1)
    best_rows = np.empty(0, dtype=np.int64)
    best_scores = np.empty(0, dtype=np.float64)
    for start in range(0, n, chunk_rows):
        block = np.asarray(transform(embeddings[start : start + chunk_rows]), dtype=np.float64)
        scores = np.concatenate([best_scores, block @ q])
        rows = np.concatenate([best_rows, np.arange(start, start + len(block), dtype=np.int64)])
        keep = _top_k(scores, k)
        best_rows, best_scores = rows[keep], scores[keep]
    order = np.lexsort((best_rows, -best_scores))
    if mean_directions is None:
        clusters, cluster_sims = np.empty(0, np.int64), np.empty(0)
    else:
        sims = np.asarray(mean_directions, dtype=np.float64) @ q
        clusters = _top_k(sims, sims.size).astype(np.int64)
        cluster_sims = sims[clusters]
    return SearchHits(best_rows[order], best_scores[order], clusters, cluster_sims)
