"""The sliders' q-step (FrozenQStep over tempered exponentials) against the cold exact solve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gem_app.core import dual, reassign, tempered
from gem_app.core.reassign import FrozenQStep, q_from_scores
from gem_app.core.tempered import TemperedScores

SLIDER_PATH = [(1.0, 1.0), (1.05, 1.0), (1.05, 1.4), (0.6, 3.0), (0.2, 8.0), (2.5, 0.3), (1.0, 0.0)]


def _scores(n: int, K: int, seed: int = 0):
    """Row-shifted scores with cluster structure (as document_scores makes them), and masses."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(K, 8))
    x = centres[rng.integers(K, size=n)] + rng.normal(size=(n, 8))
    s = (6.0 * x @ centres.T / np.sqrt(8) + rng.normal(size=K)).astype(np.float32)
    s -= s.max(axis=1, keepdims=True)
    return s, rng.integers(20, 400, size=n).astype(np.float64)


def _exact(s, w, eta, T):
    """The precise exp pass of the cold path at eta: masses and the mean log-partition."""
    chunks, rows = reassign._chunked(*reassign._check_scores(s, w))
    return dual.assignment_stats(chunks, rows, eta, T)


@pytest.fixture(scope="module")
def problem():
    return _scores(3000, 7)


def test_tempered_pass_equals_the_exp_pass(problem):
    s, w = problem
    eta = np.random.default_rng(1).normal(size=7) * 2
    for T in (0.15, 1.0, 3.0):
        fast = TemperedScores(torch.from_numpy(s), torch.as_tensor(w), T).stats(eta)
        exact = _exact(s, w, eta, T)
        np.testing.assert_allclose(fast.masses, exact.masses, rtol=0, atol=1e-13)
        assert fast.mean_lse == pytest.approx(exact.mean_lse, rel=1e-13)
        # below HESSIAN_ROWS documents, the "sample" is every document: the second moments
        # are exact (the exp pass forms them in float32: they only steer Newton steps)
        np.testing.assert_allclose(fast.second_moments, exact.second_moments, atol=1e-6)


def test_a_sampled_hessian_stays_consistent_with_the_masses(problem, monkeypatch):
    s, w = problem
    monkeypatch.setattr(tempered, "HESSIAN_ROWS", 500)
    eta = np.linspace(-1, 1, 7)
    stats = TemperedScores(torch.from_numpy(s), torch.as_tensor(w), 0.7).stats(eta)
    curvature = np.diag(stats.masses) - stats.second_moments  # the sample's own, PSD
    np.testing.assert_allclose(curvature.sum(axis=1), 0.0, atol=1e-12)
    assert np.linalg.eigvalsh(0.5 * (curvature + curvature.T)).min() > -1e-12
    np.testing.assert_allclose(stats.masses, _exact(s, w, eta, 0.7).masses, atol=1e-13)


def test_underflow_is_reported_not_hidden(problem):
    s, w = problem
    eta = np.zeros(7)
    eta[0] = 1e4  # at T = 0.01 every other cluster's b underflows, and so does E_i0 of rows
    # far from cluster 0 (s_i0 < -7): their Z would be 0
    assert (s[:, 0] < -7.5).any()
    assert TemperedScores(torch.from_numpy(s), torch.as_tensor(w), 0.01).stats(eta) is None


@pytest.mark.parametrize("K", [7, 300])  # the full and the diagonal Newton steps
def test_slider_path_gives_the_cold_solution(K, monkeypatch):
    s, w = _scores(3000 if K < 100 else 1500, K, seed=K)
    frozen = FrozenQStep(s, w)
    for T, lam in SLIDER_PATH:
        fast = frozen.solve(T, lam)
        cold = q_from_scores(s, w, temperature=T, balance=lam)
        exact = _exact(s, w, fast.dual, T)
        # the fast masses are the exact masses at its dual, and that dual is optimal
        np.testing.assert_allclose(fast.masses, exact.masses / exact.masses.sum(), atol=1e-12)
        assert dual.duality_gap(exact.masses, fast.dual, lam) <= 1e-11
        np.testing.assert_allclose(fast.masses, cold.masses, atol=2e-6)
        J_fast = exact.objective(fast.dual, T, lam)
        J_cold = _exact(s, w, cold.dual, T).objective(cold.dual, T, lam)
        assert J_fast == pytest.approx(J_cold, rel=1e-9, abs=1e-9)
        np.testing.assert_allclose(w @ fast.q / w.sum(), fast.masses, atol=1e-6)


def test_nearby_moves_need_no_exp_pass(problem, monkeypatch):
    s, w = problem
    frozen = FrozenQStep(s, w)
    frozen.solve(1.0, 1.0)
    moves = [(1.0, 1.1), (1.05, 1.1), (1.05, 1.2), (1.1, 1.2)]
    cold = {move: q_from_scores(s, w, temperature=move[0], balance=move[1]) for move in moves}
    calls = [0]
    original = dual.assignment_stats

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(dual, "assignment_stats", counted)
    for move in moves:
        moved = frozen.solve(*move)
        np.testing.assert_allclose(moved.masses, cold[move].masses, atol=2e-6)
    assert calls[0] == 0  # tempered passes only: an exp per score when T moves, none per pass


def test_warm_start_comes_from_the_nearest_solved_point(problem):
    s, w = problem
    frozen = FrozenQStep(s, w)
    assert np.array_equal(frozen.nearest(1.0, 1.0), np.zeros(7))
    a = frozen.solve(0.5, 2.0).dual
    b = frozen.solve(2.0, 2.0).dual
    np.testing.assert_array_equal(frozen.nearest(0.55, 2.1), a)
    np.testing.assert_array_equal(frozen.nearest(1.8, 1.5), b)
    frozen.remember(1.0, 5.0, np.arange(7.0))
    np.testing.assert_array_equal(frozen.nearest(1.0, 4.5), np.arange(7.0))
    with pytest.raises(ValueError, match=r"dual_solution must have shape \(7,\)"):
        frozen.remember(1.0, 1.0, np.zeros(3))
    with pytest.raises(ValueError, match="temperature"):
        frozen.solve(0.0, 1.0)


def test_the_exp_path_finishes_when_the_tempered_passes_cannot(problem, monkeypatch):
    s, w = problem
    cold = {m: q_from_scores(s, w, temperature=m[0], balance=m[1]) for m in SLIDER_PATH}
    # every tempered pass underflows: the exact exp path solves each move
    monkeypatch.setattr(TemperedScores, "stats", lambda self, eta, full=None: None)
    underflowing = FrozenQStep(s, w)
    for move in SLIDER_PATH:
        np.testing.assert_allclose(underflowing.solve(*move).masses, cold[move].masses, atol=2e-6)
    monkeypatch.undo()
    # too many entries for float64 exponentials: the exp path, warm from the nearest point
    monkeypatch.setattr(reassign, "_TEMPERED_MAX_ENTRIES", s.size - 1)
    large = FrozenQStep(s, w)
    for move in SLIDER_PATH:
        np.testing.assert_allclose(large.solve(*move).masses, cold[move].masses, atol=2e-6)
    assert large._tempered is None
