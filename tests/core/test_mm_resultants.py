"""The resultants r = (a q)^T x of a pass: sparse sum over the non-zeros of q, or a GEMM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gem_app.core import mm
from gem_app.core.mm import _weighted_resultants


def _sparse_q(n, K, extra, seed):
    rng = np.random.default_rng(seed)
    q = np.zeros((n, K))
    q[np.arange(n), rng.integers(0, K, size=n)] = 1.0
    shared = rng.choice(n, size=extra, replace=False)  # rows split between two clusters
    q[shared, rng.integers(0, K, size=extra)] += rng.uniform(0.1, 1.0, size=extra)
    return q / q.sum(1, keepdims=True), rng.uniform(0.5, 3.0, size=n), rng.normal(size=(n, 7))


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
    original = torch.Tensor.index_add_
    monkeypatch.setattr(
        torch.Tensor, "index_add_", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    r = _weighted_resultants(torch.as_tensor(q), torch.as_tensor(x))
    assert calls == []
    np.testing.assert_allclose(r.numpy(), q.T @ x, rtol=1e-12)


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
