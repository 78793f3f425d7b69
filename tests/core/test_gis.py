"""Tests for gem_app.core.gis against independent references (scipy.stats.entropy, loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import entropy

from gem_app.core.gis import (
    cluster_gis,
    cluster_masses,
    compute_gis,
    document_gis,
    iter_assignment_chunks,
    term_gis,
)


def _random_problem(seed=0, n=60, k=4, v=12):
    rng = np.random.default_rng(seed)
    q = rng.dirichlet(np.full(k, 0.5), size=n)
    q[0] = np.eye(k)[1]  # a one-hot row: exercises 0 log 0 = 0
    weights = rng.integers(1, 500, size=n).astype(float)
    presence = rng.random((n, v)) < 0.3
    counts = presence * rng.integers(1, 4, size=(n, v))  # counts; only presence matters
    return q, weights, sp.csr_matrix(counts)


def _chunks_shuffled(q, size, seed=1):
    """Chunk source over a random permutation of the rows (integer index arrays)."""
    order = np.random.default_rng(seed).permutation(q.shape[0])
    return [(order[i : i + size], q[order[i : i + size]]) for i in range(0, len(order), size)]


def _reference_term_gis(doc_term, q, weights):
    """Dense loop version of METHOD.md section 5, term formula."""
    present = doc_term.toarray() != 0
    n, v = present.shape
    k = q.shape[1]
    total = weights.sum()
    rho = weights @ q / total
    out = np.zeros((v, k))
    for t in range(v):
        docs = [i for i in range(n) if present[i, t]]
        term_mass = sum(weights[i] for i in docs)
        for c in range(k):
            joint = sum(weights[i] * q[i, c] for i in docs)
            if joint == 0:
                continue
            p_t_given_k = joint / (total * rho[c])
            p_k_given_t = joint / term_mass
            out[t, c] = p_t_given_k * math.log(p_k_given_t / rho[c])
    return out


def test_cluster_masses_is_weighted_mean_of_rows():
    q, weights, _ = _random_problem()
    np.testing.assert_allclose(cluster_masses(q, weights), np.average(q, axis=0, weights=weights))
    np.testing.assert_allclose(cluster_masses(q), q.mean(axis=0))


@pytest.mark.parametrize("weighted", [False, True])
def test_sum_of_cluster_gis_is_mutual_information(weighted):
    q, weights, _ = _random_problem(seed=3)
    weights = weights if weighted else np.ones(len(q))
    rho = np.average(q, axis=0, weights=weights)
    expected = entropy(rho) - np.average(entropy(q, axis=1), weights=weights)
    g = cluster_gis(q, rho, weights if weighted else None, chunk_size=7)
    assert abs(g.sum() - expected) < 1e-6
    assert compute_gis(q, rho, weights if weighted else None).mutual_information == pytest.approx(
        expected, abs=1e-6
    )


def test_cluster_gis_matches_loop():
    q, weights, _ = _random_problem(seed=4)
    rho = np.average(q, axis=0, weights=weights)
    expected = [
        sum(
            w * qi[c] * math.log(qi[c] / rho[c])
            for w, qi in zip(weights, q, strict=True)
            if qi[c] > 0
        )
        / weights.sum()
        for c in range(q.shape[1])
    ]
    np.testing.assert_allclose(cluster_gis(q, rho, weights), expected, rtol=1e-10, atol=1e-12)


def test_document_gis_is_kl_to_rho():
    q, weights, _ = _random_problem(seed=5)
    rho = np.average(q, axis=0, weights=weights)
    expected = [entropy(row, rho) for row in q]
    np.testing.assert_allclose(document_gis(q, rho, chunk_size=9), expected, rtol=1e-10)


def test_document_gis_zero_at_rho_and_maximal_for_one_hot():
    rho = np.array([0.5, 0.3, 0.15, 0.05])
    rng = np.random.default_rng(7)
    random_rows = rng.dirichlet(np.ones(4), size=200)
    one_hot = np.eye(4)
    q = np.vstack([rho, one_hot, random_rows])
    g = document_gis(q, rho)
    assert abs(g[0]) < 1e-12
    np.testing.assert_allclose(g[1:5], -np.log(rho))  # KL(e_k || rho) = -log rho_k
    # the one-hot row on the smallest cluster is the largest score of all rows
    assert np.argmax(g) == 1 + np.argmin(rho)
    assert np.all(g[5:] < -np.log(rho.min()))
    assert np.all(g >= -1e-12)


def test_term_gis_matches_dense_reference():
    q, weights, doc_term = _random_problem(seed=8, n=40, k=3, v=10)
    rho = np.average(q, axis=0, weights=weights)
    got = term_gis(doc_term, q, rho, weights, chunk_size=6)
    np.testing.assert_allclose(
        got, _reference_term_gis(doc_term, q, weights), rtol=1e-10, atol=1e-14
    )


def test_chunk_source_equals_array():
    q, weights, doc_term = _random_problem(seed=9)
    rho = np.average(q, axis=0, weights=weights)
    from_array = compute_gis(q, rho, weights, doc_term)
    from_chunks = compute_gis(_chunks_shuffled(q, 11), rho, weights, doc_term)
    from_callable = compute_gis(lambda: iter(_chunks_shuffled(q, 5)), rho, weights, doc_term)
    slices = [(slice(i, min(i + 13, len(q))), q[i : i + 13]) for i in range(0, len(q), 13)]
    from_slices = compute_gis(iter(slices), rho, weights, doc_term)
    for other in (from_chunks, from_callable, from_slices):
        np.testing.assert_allclose(other.document, from_array.document, rtol=1e-12)
        np.testing.assert_allclose(other.cluster, from_array.cluster, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(other.term, from_array.term, rtol=1e-12, atol=1e-15)
    assert from_chunks.total_mass == pytest.approx(weights.sum())


def test_term_only_in_one_planted_cluster_ranks_first():
    rng = np.random.default_rng(11)
    n_per, k = 30, 3
    truth = np.repeat(np.arange(k), n_per)
    q = np.full((n_per * k, k), 0.05)
    q[np.arange(len(truth)), truth] = 0.9
    v = 10
    present = rng.random((len(truth), v)) < 0.3  # terms 2.. : noise in every cluster
    present[:, 0] = truth == 0  # term 0: only (and all) documents of cluster 0
    present[:, 1] = True  # term 1: every document
    weights = rng.integers(50, 150, size=len(truth)).astype(float)
    rho = np.average(q, axis=0, weights=weights)
    scores = term_gis(sp.csr_matrix(present.astype(float)), q, rho, weights)
    assert np.argmax(scores[:, 0]) == 0
    # a term in every document carries no information: P(k|t) = rho_k
    np.testing.assert_allclose(scores[1], 0.0, atol=1e-12)
    # hand-computed: P(t0|k=0) = 0.9 * A0 / (A rho_0), P(k=0|t0) = 0.9
    a0 = weights[truth == 0].sum()
    p_t_given_k = 0.9 * a0 / (weights.sum() * rho[0])
    assert scores[0, 0] == pytest.approx(p_t_given_k * math.log(0.9 / rho[0]), rel=1e-12)


def test_empty_cluster_and_unused_term_score_zero():
    q = np.array([[0.7, 0.3, 0.0], [0.2, 0.8, 0.0], [1.0, 0.0, 0.0]])
    rho = q.mean(axis=0)
    doc_term = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=float))
    result = compute_gis(q, rho, doc_term=doc_term)
    assert np.all(np.isfinite(result.document)) and np.all(np.isfinite(result.term))
    assert result.cluster[2] == 0.0
    np.testing.assert_array_equal(result.term[:, 2], 0.0)
    np.testing.assert_array_equal(result.term[2], 0.0)  # term 2 occurs nowhere


def test_single_cluster_scores_are_zero():
    q = np.ones((5, 1))
    result = compute_gis(q, np.ones(1), doc_term=sp.csr_matrix(np.eye(5)))
    np.testing.assert_array_equal(result.document, 0.0)
    np.testing.assert_array_equal(result.cluster, 0.0)
    np.testing.assert_array_equal(result.term, 0.0)


def test_iter_assignment_chunks_covers_array():
    q = np.random.default_rng(0).dirichlet(np.ones(3), size=10)
    pieces = list(iter_assignment_chunks(q, chunk_size=4))
    assert [len(ids) for ids, _ in pieces] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([c for _, c in pieces]), q)


@pytest.mark.parametrize(
    "q, rho, weights, match",
    [
        (np.array([[0.5, 0.6], [0.5, 0.5]]), [0.5, 0.5], None, "row 0 of q sums to"),
        (np.array([[0.5, 0.5], [np.nan, 0.5]]), [0.5, 0.5], None, r"q\[1, 0\]"),
        (np.array([[0.5, 0.5], [1.0, 0.0]]), [0.5, 0.6], None, "rho must sum to 1"),
        (np.array([[0.5, 0.5], [1.0, 0.0]]), [1.0, 0.0], None, "row 0 puts mass"),
        (np.array([[0.5, 0.5], [1.0, 0.0]]), [0.5, 0.5], [1.0], "weights has 1 entries"),
        (np.array([[0.5, 0.5], [1.0, 0.0]]), [0.5, 0.5], [1.0, -2.0], r"weights\[1\]"),
        (np.array([[0.5, 0.5], [1.0, 0.0]]), [0.3, 0.3, 0.4], None, "rho has K = 3"),
        (np.zeros((0, 2)), [0.5, 0.5], None, "no rows"),
    ],
)
def test_bad_inputs_name_the_problem(q, rho, weights, match):
    with pytest.raises(ValueError, match=match):
        compute_gis(q, rho, weights)


def test_bad_chunk_sources():
    q = np.full((4, 2), 0.5)
    rho = np.array([0.5, 0.5])
    with pytest.raises(ValueError, match="row 1 of q appears in more than one chunk"):
        compute_gis([(np.array([0, 1]), q[:2]), (np.array([1, 2, 3]), q[1:])], rho)
    with pytest.raises(ValueError, match="row 2 of q is in no chunk"):
        compute_gis([(np.array([0, 1, 3]), q[:3])], rho)
    with pytest.raises(ValueError, match="names 3 rows but the chunk has 2"):
        compute_gis([(slice(0, 3), q[:2])], rho)
    with pytest.raises(ValueError, match="doc_term has 3 rows but q has 4"):
        compute_gis(q, rho, doc_term=sp.csr_matrix(np.ones((3, 2))))
    with pytest.raises(ValueError, match="expected K = 2"):
        compute_gis([(slice(0, 2), q[:2]), (slice(2, 4), np.ones((2, 1)))], rho)
