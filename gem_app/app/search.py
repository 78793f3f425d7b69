"""Semantic search over a fit: a query vector -> the most similar documents and clusters.

The query is embedded by the same offline encoder as the corpus (the page holds one shared
model) and then goes **through the fit's anisotropy correction** (``model.transform``: the
stored mean removed, whitening if any, back onto the unit sphere), like every document. The
similarity is the cosine on that corrected sphere: the geometry in which GEM found the
clusters and from which the map is drawn, so the nearest documents are the ones the map shows
next to each other, and the nearest clusters are the largest ``mu_k . x_q``. (On raw MiniLM
vectors every pair of documents has a cosine of about 0.2-0.4 from the common direction alone;
removing it spreads the similarities.)

With a :class:`FoldedCorrection` (:func:`fold_correction`, computed once per fit) the
correction of the documents is folded into two factors per document, and a query costs one
product with the raw embeddings: for ``u_i = e_i / ||e_i||`` and the corrected
``x_i = L (u_i - m) / n_i`` with ``n_i = ||L (u_i - m)||``,
``x_i . x_q = (e_i . v) / (||e_i|| n_i) - (m . v) / n_i`` where ``v = L^T x_q``.

The documents are scanned in chunks (``chunk_rows`` rows corrected and multiplied at a time,
the best ``k`` kept between chunks), so memory stays ``O(chunk_rows * d)`` at any N.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gem_app.utils.validation import check_int

__all__ = ["FoldedCorrection", "SearchHits", "embed_query", "fold_correction", "search_documents"]


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


@dataclass(frozen=True)
class FoldedCorrection:
    """The fit's anisotropy correction folded into per-document factors.

    Attributes
    ----------
    mean : ndarray of shape (d,) or None
        The mean resultant m the correction removes (None: no centring).
    whitening : ndarray of shape (d, d) or None
        The whitening map L (None: L = I).
    scale : ndarray of float64, shape (N,)
        ``1 / (||e_i|| n_i)`` (0 for a row with no direction).
    inv_norm : ndarray of float64, shape (N,)
        ``1 / n_i`` (0 for a row with no direction).
    """

    mean: np.ndarray | None
    whitening: np.ndarray | None
    scale: np.ndarray
    inv_norm: np.ndarray

    def scores(self, block: np.ndarray, start: int, query: np.ndarray) -> np.ndarray:
        """``x_i . x_q`` of the rows ``start : start + len(block)`` (raw rows ``block``)."""
        v = query if self.whitening is None else self.whitening.T @ query
        rows = slice(start, start + len(block))
        dots = (block @ v.astype(block.dtype)).astype(np.float64) * self.scale[rows]
        if self.mean is not None:
            dots -= float(self.mean @ v) * self.inv_norm[rows]
        return dots


def fold_correction(embeddings, mean=None, whitening=None, *, chunk_rows: int = 65_536):
    """The per-document factors of :class:`FoldedCorrection` (one pass over the embeddings).

    Parameters
    ----------
    embeddings : ndarray of shape (N, d)
    mean : array-like of shape (d,) or None
    whitening : array-like of shape (d, d) or None
        As :meth:`gem_app.core.sphere.SphereTransform.correction` returns them.
    chunk_rows : int >= 1

    Returns
    -------
    FoldedCorrection
    """
    chunk_rows = check_int(chunk_rows, "chunk_rows", minimum=1)
    m = None if mean is None else np.asarray(mean, dtype=np.float64)
    L = None if whitening is None else np.asarray(whitening, dtype=np.float64)
    n = embeddings.shape[0]
    scale, inv_norm = np.zeros(n), np.zeros(n)
    for start in range(0, n, chunk_rows):
        block = np.asarray(embeddings[start : start + chunk_rows], dtype=np.float64)
        lengths = np.linalg.norm(block, axis=1)
        z = block / np.where(lengths > 0, lengths, 1.0)[:, None]
        if m is not None:
            z -= m
        if L is not None:
            z = z @ L.T
        norms = np.linalg.norm(z, axis=1)
        ok = (lengths > 0) & (norms > 0)
        rows = slice(start, start + len(block))
        inv_norm[rows] = np.where(ok, 1.0 / np.where(ok, norms, 1.0), 0.0)
        scale[rows] = inv_norm[rows] / np.where(ok, lengths, 1.0)
    for factor in (scale, inv_norm):  # shared by the app's sessions: read-only
        factor.setflags(write=False)
    return FoldedCorrection(m, L, scale, inv_norm)


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
    folded: FoldedCorrection | None = None,
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
    folded : FoldedCorrection, optional
        The documents' correction folded (:func:`fold_correction` with the same correction as
        ``transform``): one product per chunk instead of correcting every document.

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
    if folded is not None and folded.scale.shape != (n,):
        raise ValueError(f"the folded correction has {folded.scale.shape[0]} rows, not {n}")
    q = np.asarray(transform(query.astype(embeddings.dtype)), dtype=np.float64).reshape(-1)
    best_rows = np.empty(0, dtype=np.int64)
    best_scores = np.empty(0, dtype=np.float64)
    for start in range(0, n, chunk_rows):
        if folded is None:
            block = np.asarray(transform(embeddings[start : start + chunk_rows]), np.float64)
            chunk_scores = block @ q
        else:
            block = np.asarray(embeddings[start : start + chunk_rows])
            chunk_scores = folded.scores(block, start, q)
        scores = np.concatenate([best_scores, chunk_scores])
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
