"""The resultants r = (a q)^T x of a pass: a sparse product over the non-zeros of q, or a GEMM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gem_app.core import mm
from gem_app.core.mm import _diagonal_moments, _sparse_transpose, _transposed_weights


def _sparse_q(n, K, extra, seed):
    rng = np.random.default_rng(seed)
    q = np.zeros((n, K))
    q[np.arange(n), rng.integers(0, K, size=n)] = 1.0
    shared = rng.choice(n, size=extra, replace=False)  # rows split between two clusters
    q[shared, rng.integers(0, K, size=extra)] += rng.uniform(0.1, 1.0, size=extra)
    return q / q.sum(1, keepdims=True), rng.uniform(0.5, 3.0, size=n), rng.normal(size=(n, 7))


def _weighted_resultants(aq, x):
    return _transposed_weights(aq).matmul(x)  # as a pass forms r = (a q)^T x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_resultants_match_the_dense_product(dtype):
    q, a, x = _sparse_q(500, 40, 60, seed=1)
    aq = torch.as_tensor(a[:, None] * q, dtype=dtype)
    assert int(torch.count_nonzero(aq)) <= mm.SPARSE_MAX_DENSITY * aq.numel()  # sparse path
    r = _weighted_resultants(aq, torch.as_tensor(x, dtype=dtype))
    assert r.dtype == dtype and r.shape == (40, 7)
    expected = (a[:, None] * q).T @ x  # float64 reference
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    np.testing.assert_allclose(r.numpy(), expected, rtol=tol, atol=tol * np.abs(expected).max())


def test_dense_q_takes_the_gemm_and_matches(monkeypatch):
    rng = np.random.default_rng(2)
    q = rng.dirichlet(np.ones(6), size=200)  # every entry non-zero
    x = rng.normal(size=(200, 5))
    calls = []
    monkeypatch.setattr(mm, "_sparse_transpose", lambda *a: calls.append(1))
    r = _weighted_resultants(torch.as_tensor(q), torch.as_tensor(x))
    assert calls == []
    np.testing.assert_allclose(r.numpy(), q.T @ x, rtol=1e-12)


def test_the_sparse_transpose_is_aq_transposed_with_rows_in_order():
    q, a, _ = _sparse_q(300, 12, 40, seed=4)
    aq = torch.as_tensor(a[:, None] * q)
    sparse = _sparse_transpose(aq)
    assert sparse.layout == torch.sparse_csr and sparse.shape == (12, 300)
    np.testing.assert_array_equal(sparse.to_dense().numpy(), (a[:, None] * q).T)
    crow, cols = sparse.crow_indices().numpy(), sparse.col_indices().numpy()
    np.testing.assert_array_equal(np.diff(crow), np.count_nonzero(q, axis=0))
    for k in range(12):  # each cluster's rows ascending: a fixed summation order
        assert np.all(np.diff(cols[crow[k] : crow[k + 1]]) > 0)


def test_both_paths_agree_and_are_deterministic(monkeypatch):
    q, a, x = _sparse_q(3000, 64, 300, seed=3)
    aq = torch.as_tensor(a[:, None] * q, dtype=torch.float32)
    xt = torch.as_tensor(x, dtype=torch.float32)
    sparse = _weighted_resultants(aq, xt)
    assert torch.equal(sparse, _weighted_resultants(aq, xt))
    monkeypatch.setattr(mm, "SPARSE_MAX_DENSITY", 0.0)
    dense = _weighted_resultants(aq, xt)
    np.testing.assert_allclose(sparse.numpy(), dense.numpy(), rtol=1e-4, atol=1e-4)


def test_an_empty_chunk_and_all_zero_weights_give_zero_resultants():
    empty = _weighted_resultants(torch.zeros((0, 4)), torch.zeros((0, 3)))
    assert empty.shape == (4, 3) and not empty.any()
    zero = _weighted_resultants(torch.zeros((10, 4)), torch.ones((10, 3)))
    assert zero.shape == (4, 3) and not zero.any()


def test_the_second_moments_of_the_sparse_form_match_the_dense_ones():
    q, a, _ = _sparse_q(800, 20, 90, seed=5)
    aq = torch.as_tensor(a[:, None] * q)
    sparse = _transposed_weights(aq)
    assert sparse.layout == torch.sparse_csr
    expected = (a[:, None] * q).T @ q  # sum_i a_i q_i q_i^T
    np.testing.assert_allclose(sparse.matmul(torch.as_tensor(q)).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("sparse", [True, False])
def test_the_diagonal_second_moments_match_a_q_squared(monkeypatch, sparse):
    q, a, _ = _sparse_q(600, 30, 70, seed=6)
    a[::17] = 0.0  # rows of zero mass: no entry in the sparse form
    if not sparse:
        monkeypatch.setattr(mm, "SPARSE_MAX_DENSITY", 0.0)
    qt, at = torch.as_tensor(q), torch.as_tensor(a)
    aq_t = _transposed_weights(qt * at[:, None])
    assert (aq_t.layout == torch.sparse_csr) == sparse
    np.testing.assert_allclose(_diagonal_moments(aq_t, qt, at).numpy(), a @ (q * q), rtol=1e-12)
