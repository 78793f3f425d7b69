"""Geometric Influence Score (GIS) of documents, clusters and terms (METHOD.md section 5).

All scores are in nats and computed from soft assignments ``q`` (N, K), cluster masses
``rho`` (K,) and document masses ``a`` (N,) (token counts; 1 when unknown):

- document: ``g_i = KL(q_i || rho) = sum_k q_ik log(q_ik / rho_k)``
- cluster:  ``G_k = (1/A) sum_i a_i q_ik log(q_ik / rho_k)``, so that
  ``sum_k G_k = I(X; Z) = H(rho) - (1/A) sum_i a_i H(q_i)``
- term:     ``G(t, k) = P(t|k) log(P(k|t) / rho_k)`` with
  ``P(t|k) = sum_{i has t} a_i q_ik / (A rho_k)`` and
  ``P(k|t) = sum_{i has t} a_i q_ik / sum_{i has t} a_i``.

Everything streams over row chunks of ``q``: pass either an array (N, K) or an iterable
of ``(rows, q_chunk)`` pairs (``rows`` a ``slice`` or an integer index array), or a
callable returning such an iterable. No dense (N, V) matrix is ever formed; term
statistics come from a sparse document-term matrix. Accumulations are in float64 and
``0 log 0 = 0`` throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import rel_entr

__all__ = [
    "GISResult",
    "cluster_gis",
    "cluster_masses",
    "compute_gis",
    "document_gis",
    "iter_assignment_chunks",
    "term_gis",
]

#: Tolerance on ``sum_k q_ik = 1`` and ``sum_k rho_k = 1`` (float32 producers are fine).
SIMPLEX_ATOL = 1e-4

QInput = np.ndarray | Iterable[tuple[slice | np.ndarray, np.ndarray]] | Callable[[], Iterable]


@dataclass(frozen=True)
class GISResult:
    """Influence scores from one pass over the assignments.

    Attributes
    ----------
    document : ndarray of shape (N,)
        ``g_i = KL(q_i || rho)`` in nats.
    cluster : ndarray of shape (K,)
        ``G_k``; their sum is the mutual information ``I(X; Z)``.
    term : ndarray of shape (V, K) or None
        ``G(t, k)``, present when a document-term matrix was given.
    total_mass : float
        ``A = sum_i a_i``.
    """

    document: np.ndarray
    cluster: np.ndarray
    term: np.ndarray | None
    total_mass: float

    @property
    def mutual_information(self) -> float:
        """``I(X; Z) = sum_k G_k`` in nats."""
        return float(self.cluster.sum())


# ----------------------------------------------------------------------------- validation


def _check_rho(rho) -> np.ndarray:
    rho = np.asarray(rho, dtype=np.float64)
    if rho.ndim != 1 or rho.size == 0:
        raise ValueError(
            f"rho must be a non-empty 1-D array of cluster masses, got shape {rho.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(rho) | (rho < 0))
    if bad.size:
        raise ValueError(f"rho[{bad[0]}] = {float(rho[bad[0]])} is not a finite non-negative mass")
    if abs(rho.sum() - 1.0) > SIMPLEX_ATOL:
        raise ValueError(f"rho must sum to 1, sums to {rho.sum():.8g}")
    return rho


def _check_weights(weights, n_rows: int | None) -> np.ndarray | None:
    if weights is None:
        return None
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1:
        raise ValueError(f"weights must be 1-D (one mass per document), got shape {weights.shape}")
    if n_rows is not None and weights.shape[0] != n_rows:
        raise ValueError(f"weights has {weights.shape[0]} entries but q has {n_rows} rows")
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
    if bad.size:
        raise ValueError(f"weights[{bad[0]}] = {float(weights[bad[0]])} is not a finite mass >= 0")
    if weights.size and weights.sum() <= 0:
        raise ValueError("weights sum to 0: at least one document needs a positive mass")
    return weights


def _check_chunk(rows, chunk, n_clusters: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(row_ids, q_chunk)`` as int64 / float64 after validating the chunk."""
    chunk = np.asarray(chunk, dtype=np.float64)
    if chunk.ndim != 2:
        raise ValueError(f"a chunk of q must be 2-D (rows, K), got shape {chunk.shape}")
    if n_clusters is not None and chunk.shape[1] != n_clusters:
        raise ValueError(f"a chunk of q has {chunk.shape[1]} columns, expected K = {n_clusters}")
    if isinstance(rows, slice):
        if rows.step not in (None, 1) or rows.stop is None:
            raise ValueError(f"row slice {rows!r} needs an explicit stop and step 1")
        row_ids = np.arange(rows.start or 0, rows.stop, dtype=np.int64)
    else:
        row_ids = np.asarray(rows, dtype=np.int64).reshape(-1)
    if row_ids.shape[0] != chunk.shape[0]:
        raise ValueError(
            f"row index names {row_ids.shape[0]} rows but the chunk has {chunk.shape[0]}"
        )
    if row_ids.size and row_ids.min() < 0:
        raise ValueError(f"row index {int(row_ids.min())} is negative")
    bad_rows, bad_cols = np.nonzero(~np.isfinite(chunk) | (chunk < 0))
    if bad_rows.size:
        r, c = bad_rows[0], bad_cols[0]
        raise ValueError(f"q[{row_ids[r]}, {c}] = {float(chunk[r, c])} is not a finite probability")
    off = np.flatnonzero(np.abs(chunk.sum(axis=1) - 1.0) > SIMPLEX_ATOL)
    if off.size:
        r = off[0]
        raise ValueError(f"row {row_ids[r]} of q sums to {chunk[r].sum():.8g}, not 1")
    return row_ids, chunk


def iter_assignment_chunks(
    q: QInput, chunk_size: int = 8192
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield validated ``(row_ids, q_chunk)`` pairs from an array or a chunk source.

    Parameters
    ----------
    q : ndarray of shape (N, K), iterable of (rows, ndarray (n, K)), or callable
        Soft assignments. Anything with ``__array__`` counts as an array; any other
        iterable is a chunk source whose items are ``(rows, q_chunk)`` pairs, ``rows``
        a ``slice`` with explicit stop or an integer array of the chunk's row ids.
        A callable is called once to get the iterable.
    chunk_size : int
        Rows per chunk when ``q`` is an array.

    Yields
    ------
    row_ids : ndarray of shape (n,), int64
    q_chunk : ndarray of shape (n, K), float64
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if callable(q) and not _is_array(q):
        q = q()
    if _is_array(q):
        q = np.asarray(q)
        if q.ndim != 2 or q.shape[1] == 0:
            raise ValueError(f"q must have shape (N, K) with K >= 1, got {q.shape}")
        for start in range(0, q.shape[0], chunk_size):
            stop = min(start + chunk_size, q.shape[0])
            yield _check_chunk(slice(start, stop), q[start:stop], q.shape[1])
        return
    n_clusters = None
    for item in q:
        try:
            rows, chunk = item
        except (TypeError, ValueError) as exc:
            raise ValueError("each chunk of q must be a (rows, q_chunk) pair") from exc
        row_ids, chunk = _check_chunk(rows, chunk, n_clusters)
        n_clusters = chunk.shape[1]
        yield row_ids, chunk


def _is_array(q) -> bool:
    """An in-memory array (numpy, or anything with ``__array__``), not a chunk source."""
    return isinstance(q, np.ndarray) or hasattr(q, "__array__")


def _n_rows(q: QInput) -> int | None:
    if not _is_array(q):
        return None
    shape = np.shape(q)
    return int(shape[0]) if len(shape) >= 1 else None


def _chunk_weights(weights: np.ndarray | None, row_ids: np.ndarray) -> np.ndarray:
    if weights is None:
        return np.ones(row_ids.shape[0])
    if row_ids.size and row_ids.max() >= weights.shape[0]:
        raise ValueError(
            f"row {int(row_ids.max())} of q has no weight (weights has {weights.shape[0]})"
        )
    return weights[row_ids]


# ----------------------------------------------------------------------------- maths


def _kl_rows(q_chunk: np.ndarray, rho: np.ndarray, row_ids: np.ndarray) -> np.ndarray:
    """``KL(q_i || rho)`` per row, 0 log 0 = 0; error if q_ik > 0 where rho_k = 0."""
    terms = rel_entr(q_chunk, rho[None, :])
    bad_rows, bad_cols = np.nonzero(np.isinf(terms))
    if bad_rows.size:
        r, k = bad_rows[0], bad_cols[0]
        raise ValueError(
            f"row {row_ids[r]} puts mass {q_chunk[r, k]:.3g} on cluster {k} whose rho is 0"
        )
    return terms


def _term_scores(
    joint: np.ndarray, term_mass: np.ndarray, rho: np.ndarray, total_mass: float
) -> np.ndarray:
    """``G(t, k)`` from ``joint[t, k] = sum_{i has t} a_i q_ik`` and ``term_mass[t] = sum_{i has t} a_i``.

    Parameters
    ----------
    joint : ndarray of shape (V, K)
    term_mass : ndarray of shape (V,)
    rho : ndarray of shape (K,)
    total_mass : float

    Returns
    -------
    ndarray of shape (V, K); 0 where ``joint`` is 0 or the cluster is empty.
    """
    cluster_mass = total_mass * rho  # sum_i a_i q_ik
    scores = np.zeros_like(joint)
    ok = (joint > 0) & (cluster_mass[None, :] > 0) & (term_mass[:, None] > 0)
    t_idx, k_idx = np.nonzero(ok)
    p_t_given_k = joint[ok] / cluster_mass[k_idx]
    p_k_given_t = joint[ok] / term_mass[t_idx]
    scores[ok] = p_t_given_k * np.log(p_k_given_t / rho[k_idx])
    return scores


def _binary_rows(doc_term: sp.csr_matrix, row_ids: np.ndarray) -> sp.csr_matrix:
    rows = doc_term[row_ids]
    rows = sp.csr_matrix(rows, dtype=np.float64, copy=True)
    rows.eliminate_zeros()
    rows.data[:] = 1.0
    return rows


def _as_csr(doc_term) -> sp.csr_matrix:
    if sp.issparse(doc_term):
        matrix = sp.csr_matrix(doc_term)
    else:
        matrix = np.asarray(doc_term)
        if matrix.ndim != 2:
            raise ValueError(f"doc_term must be 2-D (N, V), got shape {matrix.shape}")
        matrix = sp.csr_matrix(matrix)
    if matrix.nnz and not np.all(np.isfinite(matrix.data)):
        raise ValueError("doc_term holds NaN or Inf entries")
    return matrix


# ----------------------------------------------------------------------------- public API


def cluster_masses(q: QInput, weights=None, *, chunk_size: int = 8192) -> np.ndarray:
    """``rho_k = sum_i a_i q_ik / A``.

    Parameters
    ----------
    q : ndarray of shape (N, K) or chunk source (see :func:`iter_assignment_chunks`)
    weights : ndarray of shape (N,), optional
        Document masses ``a_i`` (token counts); ones when omitted.

    Returns
    -------
    ndarray of shape (K,)
    """
    weights = _check_weights(weights, _n_rows(q))
    mass = None
    for row_ids, chunk in iter_assignment_chunks(q, chunk_size):
        part = _chunk_weights(weights, row_ids) @ chunk
        mass = part if mass is None else mass + part
    if mass is None:
        raise ValueError("q has no rows")
    if mass.sum() <= 0:
        raise ValueError("the documents of q have zero total mass")
    return mass / mass.sum()


def compute_gis(
    q: QInput, rho, weights=None, doc_term=None, *, chunk_size: int = 8192
) -> GISResult:
    """Document, cluster and (optionally) term GIS in one pass over ``q``.

    Parameters
    ----------
    q : ndarray of shape (N, K) or chunk source (see :func:`iter_assignment_chunks`)
        Soft assignments; each row sums to 1.
    rho : ndarray of shape (K,)
        Cluster masses ``sum_i a_i q_ik / A`` (see :func:`cluster_masses`).
    weights : ndarray of shape (N,), optional
        Document masses ``a_i``; ones when omitted.
    doc_term : sparse matrix of shape (N, V), optional
        Document-term matrix (CSR preferred); only presence (nonzero) is used.
    chunk_size : int
        Rows per chunk when ``q`` is an array.

    Returns
    -------
    GISResult
        ``document`` (N,), ``cluster`` (K,), ``term`` (V, K) or None, ``total_mass``.
        With a chunk source, N is one more than the largest row id seen; every row
        id in ``range(N)`` must occur exactly once.
    """
    rho = _check_rho(rho)
    n_rows = _n_rows(q)
    weights = _check_weights(weights, n_rows)
    matrix = None if doc_term is None else _as_csr(doc_term)
    if matrix is not None and n_rows is not None and matrix.shape[0] != n_rows:
        raise ValueError(f"doc_term has {matrix.shape[0]} rows but q has {n_rows}")
    n_clusters = rho.shape[0]
    pieces: list[tuple[np.ndarray, np.ndarray]] = []
    cluster_sum = np.zeros(n_clusters)
    total_mass = 0.0
    joint = term_mass = None
    if matrix is not None:
        joint = np.zeros((matrix.shape[1], n_clusters))
        term_mass = np.zeros(matrix.shape[1])
    for row_ids, chunk in iter_assignment_chunks(q, chunk_size):
        if chunk.shape[1] != n_clusters:
            raise ValueError(f"q has {chunk.shape[1]} columns but rho has K = {n_clusters}")
        a = _chunk_weights(weights, row_ids)
        kl_terms = _kl_rows(chunk, rho, row_ids)
        pieces.append((row_ids, kl_terms.sum(axis=1)))
        cluster_sum += a @ kl_terms
        total_mass += float(a.sum())
        if matrix is not None:
            if row_ids.size and row_ids.max() >= matrix.shape[0]:
                raise ValueError(
                    f"row {int(row_ids.max())} of q is beyond doc_term's {matrix.shape[0]} rows"
                )
            present = _binary_rows(matrix, row_ids)  # (n, V) sparse
            joint += present.T @ (a[:, None] * chunk)
            term_mass += present.T @ a
    if not pieces:
        raise ValueError("q has no rows")
    if total_mass <= 0:
        raise ValueError("the documents of q have zero total mass")
    document = _assemble(pieces, n_rows)
    term = None if matrix is None else _term_scores(joint, term_mass, rho, total_mass)
    return GISResult(
        document=document, cluster=cluster_sum / total_mass, term=term, total_mass=total_mass
    )


def _assemble(pieces: list[tuple[np.ndarray, np.ndarray]], n_rows: int | None) -> np.ndarray:
    """Place per-chunk values at their row ids; every row must be covered exactly once."""
    if n_rows is None:
        n_rows = 1 + max(int(ids.max()) for ids, _ in pieces if ids.size)
    out = np.zeros(n_rows)
    seen = np.zeros(n_rows, dtype=np.int64)
    for ids, values in pieces:
        out[ids] = values
        np.add.at(seen, ids, 1)
    twice = np.flatnonzero(seen > 1)
    if twice.size:
        raise ValueError(f"row {twice[0]} of q appears in more than one chunk")
    missing = np.flatnonzero(seen == 0)
    if missing.size:
        raise ValueError(f"row {missing[0]} of q is in no chunk")
    return out


def document_gis(q: QInput, rho, *, chunk_size: int = 8192) -> np.ndarray:
    """``g_i = KL(q_i || rho)`` in nats, shape (N,). See :func:`compute_gis`."""
    return compute_gis(q, rho, chunk_size=chunk_size).document


def cluster_gis(q: QInput, rho, weights=None, *, chunk_size: int = 8192) -> np.ndarray:
    """``G_k = (1/A) sum_i a_i q_ik log(q_ik / rho_k)`` in nats, shape (K,)."""
    return compute_gis(q, rho, weights, chunk_size=chunk_size).cluster


def term_gis(doc_term, q: QInput, rho, weights=None, *, chunk_size: int = 8192) -> np.ndarray:
    """``G(t, k)`` in nats, shape (V, K), from a sparse (N, V) document-term matrix."""
    if doc_term is None:
        raise ValueError("term_gis needs a document-term matrix")
    return compute_gis(q, rho, weights, doc_term, chunk_size=chunk_size).term
