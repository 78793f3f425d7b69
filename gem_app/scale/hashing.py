"""Hashed word and byte n-gram features of texts, with tf-idf weights (the student's input).

A fixed, process-independent hash (no Python ``hash``), so that the same text gives the
same features in every process and on every machine.
"""

from __future__ import annotations

import re
import zlib

import numpy as np
from scipy import sparse

HASH_SCHEME = "gem-ngram-hash-v1"
_WORD = re.compile(r"\w+")
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_PRIME = np.uint64(0x100000001B3)


# ---------------------------------------------------------------------------- features
def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 (wrapping arithmetic)."""
    h = h ^ (h >> np.uint64(30))
    h = h * _MIX1
    h = h ^ (h >> np.uint64(27))
    h = h * _MIX2
    return h ^ (h >> np.uint64(31))


def hash_features(
    texts, *, n_buckets=2**18, word_ngrams=(1, 2), char_ngrams=(3, 5), chunk_size=4096
):
    """Hashed n-gram counts of texts.

    Word n-grams: ``\\w+`` tokens of the lower-cased text, crc32 per word, consecutive
    words combined. Character n-grams: over the UTF-8 bytes of the lower-cased text,
    a polynomial hash per n-gram. Every hash goes through splitmix64 with a salt per
    kind and n and is taken modulo ``n_buckets``. Nothing depends on the process
    (no Python ``hash``), so workers and machines agree.

    Parameters
    ----------
    texts : sequence of str, length N
    n_buckets : int
    word_ngrams, char_ngrams : (min_n, max_n) or None
    chunk_size : int, default=4096
        Texts hashed at a time: the temporaries (8 bytes per byte of text and per
        n-gram) stay bounded by a chunk; only the sparse result grows with N.

    Returns
    -------
    scipy.sparse.csr_matrix of float32, shape (N, n_buckets)
        Counts, duplicates summed, column indices sorted within rows.
    """
    texts = list(texts)
    parts = [
        _hash_chunk(texts[start : start + chunk_size], n_buckets, word_ngrams, char_ngrams)
        for start in range(0, len(texts), chunk_size)
    ]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return sparse.csr_matrix((0, n_buckets), dtype=np.float32)
    return sparse.vstack(parts, format="csr")


def _hash_chunk(texts, n_buckets, word_ngrams, char_ngrams):
    """:func:`hash_features` of one chunk of texts."""
    lowered = [t.lower() for t in texts]
    n = len(lowered)
    docs, buckets = [], []
    if char_ngrams and n:
        encoded = [t.encode("utf-8") for t in lowered]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
        data = np.frombuffer(b"\x00".join(encoded), dtype=np.uint8).astype(np.uint64)
        # owner 2d for the bytes of document d, 2d + 1 for the separator after it
        sizes = np.column_stack([lengths, np.ones(n, dtype=np.int64)]).ravel()[:-1]
        owner = np.repeat(np.arange(2 * n - 1), sizes)
        _ngram_buckets(data, owner, 1, char_ngrams, 0x9E3779B97F4A7C15, n_buckets, docs, buckets)
    if word_ngrams and n:
        per_doc = [
            np.fromiter(
                (zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words)
            )
            for words in map(_WORD.findall, lowered)
        ]
        counts = np.fromiter(map(len, per_doc), dtype=np.int64, count=n)
        words = np.concatenate(per_doc) if per_doc else np.zeros(0, np.uint64)
        owner = np.repeat(np.arange(n), counts)
        _ngram_buckets(words, owner, 0, word_ngrams, 0xD6E8FEB86659FD93, n_buckets, docs, buckets)
    rows = np.concatenate(docs) if docs else np.zeros(0, np.int64)
    cols = np.concatenate(buckets) if buckets else np.zeros(0, np.int64)
    counts = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n_buckets)
    )
    counts.sum_duplicates()
    return counts


def _ngram_buckets(units, owner, shift, ngrams, salt, n_buckets, docs, buckets) -> None:
    """Append (document, bucket) arrays of the n-grams of ``units`` within one owner.

    units : (M,) uint64 unit hashes (bytes or words); owner : (M,) int64, equal for
    consecutive units of one document; the document is ``owner >> shift``.
    """
    lo, hi = ngrams
    h = None
    with np.errstate(over="ignore"):
        for g in range(1, hi + 1):
            if len(units) < g:
                break
            h = units.copy() if h is None else h[:-1] * _PRIME + units[g - 1 :]
            if g >= lo:
                valid = owner[: len(h)] == owner[g - 1 :]
                kind = np.uint64((salt * g) % 2**64)
                buckets.append((_mix(h[valid] ^ kind) % np.uint64(n_buckets)).astype(np.int64))
                docs.append(owner[: len(h)][valid] >> shift)


def tfidf_weights(counts, idf: np.ndarray, *, copy: bool = True, chunk_rows: int = 4096):
    """log(1 + tf) * idf, L2-normalised per row (an empty row stays empty).

    Parameters
    ----------
    counts : csr_matrix of shape (N, n_buckets)
    idf : ndarray of shape (n_buckets,)
    copy : bool, default=True
        False overwrites a float32 ``counts`` in place (the fit does: one matrix of
        ``N x non-zeros`` instead of two).
    chunk_rows : int
        Rows weighted at a time: temporaries stay bounded by a chunk.

    Returns
    -------
    csr_matrix of float32, shape (N, n_buckets)
    """
    w = counts.astype(np.float32, copy=copy)
    idf = np.asarray(idf, dtype=np.float32)
    n = w.shape[0]
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        a, b = w.indptr[start], w.indptr[stop]
        seg = w.data[a:b]
        np.log1p(seg, out=seg)
        seg *= idf[w.indices[a:b]]
        row = np.repeat(np.arange(stop - start), np.diff(w.indptr[start : stop + 1]))
        norm = np.sqrt(
            np.bincount(row, weights=seg.astype(np.float64) ** 2, minlength=stop - start)
        )
        norm[norm == 0] = 1.0
        seg /= norm[row].astype(np.float32)
    return w


def inverse_document_frequency(counts) -> np.ndarray:
    """Smoothed idf = log((1 + N) / (1 + df)) + 1 of each bucket, shape (n_buckets,), float32."""
    return idf_from_document_frequency(document_frequency(counts), counts.shape[0])


def document_frequency(counts) -> np.ndarray:
    """Number of rows of a csr ``counts`` (N, n_buckets) holding each bucket, shape (n_buckets,).

    Additive over row chunks: the df of a corpus is the sum of its chunks' (the streamed fit).
    """
    return np.bincount(counts.indices, minlength=counts.shape[1])


def idf_from_document_frequency(df: np.ndarray, n_documents: int) -> np.ndarray:
    """Smoothed idf = log((1 + N) / (1 + df)) + 1 from the document frequencies, float32."""
    return (np.log((1.0 + n_documents) / (1.0 + np.asarray(df))) + 1.0).astype(np.float32)
