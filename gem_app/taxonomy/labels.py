"""Cluster labels: top terms by term GIS and representative documents.

``cluster_labels`` builds a vocabulary from the texts (scikit-learn's CountVectorizer:
unigrams and bigrams, English stop words, ``min_df``/``max_df``), scores every term with
``G(t, k)`` (:mod:`gem_app.core.gis`), and keeps each cluster's best terms after removing
near-duplicates (a term sharing a word, or a plural/prefix variant of a word, with a
term already chosen) and, with ``diversity > 0``, maximal marginal relevance over
document co-occurrence. The label is the top three terms joined by ", ".

When the texts yield no vocabulary at all (every text empty after stop words, or
``min_df``/``max_df`` prune every term), the result is still valid: every cluster has
no terms, the label ``"cluster k"``, and ``LabelSet.note`` says why.

The optional LLM labeller lives in :mod:`gem_app.taxonomy.llm_labels`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from gem_app.core.gis import QInput, cluster_masses, compute_gis, iter_assignment_chunks
from gem_app.io.records import check_texts
from gem_app.taxonomy.vocabulary import build_vocabulary
from gem_app.utils.validation import check_int, check_real

__all__ = [
    "ClusterLabel",
    "LabelSet",
    "cluster_labels",
    "representative_documents",
    "select_terms",
    "snippet",
]

SNIPPET_CHARS = 240


@dataclass
class ClusterLabel:
    """Label of one cluster.

    Attributes
    ----------
    cluster : int
    label : str
        The name shown to users (GIS label, or the LLM's name when ``source == "llm"``).
    terms : list of str
        Top terms by ``G(t, k)``, near-duplicates removed, best first.
    term_scores : list of float
        ``G(t, k)`` of ``terms``, in nats.
    documents : list of dict
        Representative documents: ``{"row": int, "score": float, "text": str}``.
    mass : float
        ``rho_k``.
    gis_label : str
        The label from terms alone (kept when an LLM renames the cluster).
    source : str
        ``"gis"`` or ``"llm"``.
    """

    cluster: int
    label: str
    terms: list[str]
    term_scores: list[float]
    documents: list[dict[str, Any]]
    mass: float
    gis_label: str = ""
    source: str = "gis"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LabelSet:
    """Labels of all clusters; behaves like a list of :class:`ClusterLabel`."""

    clusters: list[ClusterLabel]
    vocabulary_size: int
    note: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter(self.clusters)

    def __len__(self) -> int:
        return len(self.clusters)

    def __getitem__(self, k: int) -> ClusterLabel:
        return self.clusters[k]

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocabulary_size": self.vocabulary_size,
            "note": self.note,
            "parameters": dict(self.parameters),
            "clusters": [c.to_dict() for c in self.clusters],
        }


# ----------------------------------------------------------------------------- term choice


def _similar_words(a: str, b: str) -> bool:
    """Same word, or a plural/prefix variant (``network`` / ``networks``)."""
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    return len(short) >= 3 and long.startswith(short) and len(long) - len(short) <= 2


def _near_duplicate(term: str, chosen: str) -> bool:
    """Terms that share a word, or a variant of a word, are near-duplicates."""
    return any(_similar_words(a, b) for a in term.split() for b in chosen.split())


def select_terms(
    scores: np.ndarray,
    terms: np.ndarray,
    presence: sp.csr_matrix,
    *,
    n_terms: int = 8,
    diversity: float = 0.2,
    pool_size: int | None = None,
) -> list[int]:
    """Indices of the best terms of one cluster, near-duplicates removed, best first.

    Greedy maximal marginal relevance: among the candidates with ``G > 0`` (the
    ``pool_size`` best), take the one maximising
    ``(1 - diversity) * G / max G - diversity * max cos(candidate, chosen)``, where cos
    is the cosine of the two terms' document-presence columns, and skip any
    near-duplicate (see :func:`_near_duplicate`) of a chosen term.

    Parameters
    ----------
    scores : ndarray of shape (V,)
        ``G(t, k)`` of the cluster.
    terms : ndarray of shape (V,)
    presence : sparse matrix of shape (N, V), binary
    n_terms : int
    diversity : float in [0, 1]
        0 ranks by GIS alone.
    pool_size : int, optional
        Candidates considered; default ``max(50, 5 * n_terms)``.

    Returns
    -------
    list of int, at most ``n_terms`` long
    """
    positive = np.flatnonzero(scores > 0)
    if positive.size == 0 or n_terms == 0:
        return []
    pool_size = pool_size or max(50, 5 * n_terms)
    order = positive[np.lexsort((terms[positive], -scores[positive]))][:pool_size]
    relevance = scores[order] / scores[order[0]]
    columns = sp.csc_matrix(presence)[:, order]  # no copy when already CSC
    co = (columns.T @ columns).toarray()
    norms = np.sqrt(np.diag(co))
    cosine = co / np.maximum(np.outer(norms, norms), 1e-300)
    chosen: list[int] = []
    redundancy = np.zeros(order.size)
    available = np.ones(order.size, dtype=bool)
    while len(chosen) < n_terms and available.any():
        mmr = (1 - diversity) * relevance - diversity * redundancy
        mmr[~available] = -np.inf
        best = int(np.argmax(mmr))
        chosen.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, cosine[best])
        for j in np.flatnonzero(available):
            if _near_duplicate(str(terms[order[j]]), str(terms[order[best]])):
                available[j] = False
    return [int(order[j]) for j in chosen]


# ----------------------------------------------------------------------------- documents


def representative_documents(
    q: QInput, points, mean_directions, *, n_docs: int = 3, chunk_size: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Rows with the highest ``q_ik * mu_k . x_i`` per cluster, streamed over chunks.

    Parameters
    ----------
    q : ndarray of shape (N, K) or chunk source (see :func:`gem_app.core.gis.iter_assignment_chunks`)
    points : ndarray of shape (N, d)
        Points on the sphere ``x_i``; ``None`` ranks by ``q_ik`` alone.
    mean_directions : ndarray of shape (K, d)
        ``mu_k``; ``None`` together with ``points``.
    n_docs : int

    Returns
    -------
    rows : ndarray of shape (K, min(n_docs, N)), int64, best first
    scores : ndarray of the same shape, float64
    """
    check_int(n_docs, "n_docs", minimum=1)
    if (points is None) != (mean_directions is None):
        raise ValueError("give both points and mean_directions, or neither")
    if points is not None:
        points = np.asarray(points)
        mu = np.asarray(mean_directions, dtype=np.float64)
        if points.ndim != 2 or mu.ndim != 2 or points.shape[1] != mu.shape[1]:
            raise ValueError(
                f"points {points.shape} and mean_directions {mu.shape} need shapes (N, d), (K, d)"
            )
    best_rows = best_scores = None
    for row_ids, chunk in iter_assignment_chunks(q, chunk_size):
        if points is None:
            score = chunk
        else:
            if mu.shape[0] != chunk.shape[1]:
                raise ValueError(
                    f"mean_directions has {mu.shape[0]} rows but q has K = {chunk.shape[1]}"
                )
            if row_ids.size and row_ids.max() >= points.shape[0]:
                raise ValueError(
                    f"row {int(row_ids.max())} of q has no point (points has {points.shape[0]})"
                )
            score = chunk * (np.asarray(points[row_ids], dtype=np.float64) @ mu.T)
        rows = np.broadcast_to(row_ids[None, :], (chunk.shape[1], row_ids.size))
        if best_rows is None:
            cand_rows, cand_scores = rows, score.T
        else:
            cand_rows = np.hstack([best_rows, rows])
            cand_scores = np.hstack([best_scores, score.T])
        keep = min(n_docs, cand_rows.shape[1])
        if cand_rows.shape[1] > keep:  # cheap top-`keep` first, then an exact small sort
            top = np.argpartition(-cand_scores, keep - 1, axis=1)[:, :keep]
            cand_rows = np.take_along_axis(cand_rows, top, axis=1)
            cand_scores = np.take_along_axis(cand_scores, top, axis=1)
        order = np.lexsort((cand_rows, -cand_scores), axis=1)
        best_rows = np.take_along_axis(cand_rows, order, axis=1)
        best_scores = np.take_along_axis(cand_scores, order, axis=1)
    if best_rows is None:
        raise ValueError("q has no rows")
    return best_rows.astype(np.int64), best_scores


def snippet(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"


# ----------------------------------------------------------------------------- public API


def cluster_labels(
    texts,
    q: QInput,
    rho=None,
    weights=None,
    *,
    n_terms: int = 8,
    min_df: int | float = 2,
    max_df: int | float = 0.95,
    diversity: float = 0.2,
    points=None,
    mean_directions=None,
    n_docs: int = 3,
    chunk_size: int = 8192,
) -> LabelSet:
    """Label every cluster by its top GIS terms and representative documents.

    Parameters
    ----------
    texts : sequence of str, length N
    q : ndarray of shape (N, K), or a re-iterable chunk source (list, or callable)
        Soft assignments (read twice: terms, then documents).
    rho : ndarray of shape (K,), optional
        Cluster masses; computed from ``q`` and ``weights`` when omitted.
    weights : ndarray of shape (N,), optional
        Document masses ``a_i`` (tokens); ones when omitted.
    n_terms : int
        Terms per cluster.
    min_df, max_df : int or float
        Vocabulary document-frequency bounds (see :func:`build_vocabulary`).
    diversity : float in [0, 1]
        MMR trade-off (see :func:`select_terms`).
    points, mean_directions : ndarray of shape (N, d) and (K, d), optional
        Rank representative documents by ``q_ik * mu_k . x_i``; by ``q_ik`` without.
    n_docs : int
        Representative documents per cluster.

    Returns
    -------
    LabelSet
        One :class:`ClusterLabel` per cluster; a cluster without positive-GIS terms
        (or an empty vocabulary) is labelled ``"cluster k"``.
    """
    check_int(n_terms, "n_terms", minimum=1)
    check_real(diversity, "diversity", minimum=0, maximum=1)
    if isinstance(q, Iterator):
        raise ValueError("q is a one-shot iterator; pass an array, a list or a callable of chunks")
    texts = check_texts(texts)
    if hasattr(q, "shape") and q.shape[0] != len(texts):
        raise ValueError(f"q has {q.shape[0]} rows but there are {len(texts)} texts")
    presence, terms, note = build_vocabulary(texts, min_df=min_df, max_df=max_df)
    if rho is None:
        rho = cluster_masses(q, weights, chunk_size=chunk_size)
    gis = compute_gis(q, rho, weights, presence, chunk_size=chunk_size)
    if gis.document.shape[0] != len(texts):
        raise ValueError(f"q has {gis.document.shape[0]} rows but there are {len(texts)} texts")
    rows, doc_scores = representative_documents(
        q, points, mean_directions, n_docs=n_docs, chunk_size=chunk_size
    )
    by_term = sp.csc_matrix(presence)
    labels = []
    for k in range(gis.cluster.shape[0]):
        chosen = select_terms(gis.term[:, k], terms, by_term, n_terms=n_terms, diversity=diversity)
        chosen_terms = [str(terms[t]) for t in chosen]
        label = ", ".join(chosen_terms[:3]) or f"cluster {k}"
        documents = [
            {"row": int(r), "score": float(s), "text": snippet(texts[r])}
            for r, s in zip(rows[k], doc_scores[k], strict=True)
        ]
        labels.append(
            ClusterLabel(
                cluster=k,
                label=label,
                terms=chosen_terms,
                term_scores=[float(gis.term[t, k]) for t in chosen],
                documents=documents,
                mass=float(np.asarray(rho, dtype=float)[k]),
                gis_label=label,
            )
        )
    parameters = {"n_terms": n_terms, "min_df": min_df, "max_df": max_df, "diversity": diversity}
    return LabelSet(
        clusters=labels, vocabulary_size=int(terms.size), note=note, parameters=parameters
    )
