"""The frozen-geometry q-step from a warm dual: exact, and cheap near the previous solution."""

from __future__ import annotations

import numpy as np
import pytest

from gem_app.core import dual, reassign


@pytest.fixture()
def scores():
    rng = np.random.default_rng(0)
    s = (rng.normal(size=(3000, 6)) * 4).astype(np.float32)
    s -= s.max(axis=1, keepdims=True)
    return s, rng.integers(20, 400, size=3000).astype(np.float64)


def _passes(monkeypatch):
    calls = [0]
    original = dual.assignment_stats

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(dual, "assignment_stats", counted)
    return calls


def test_warm_start_gives_the_cold_solution(scores):
    s, w = scores
    cold = reassign.q_from_scores(s, w, temperature=0.8, balance=2.0)
    near = reassign.q_from_scores(s, w, temperature=0.85, balance=2.0)
    warm = reassign.q_from_scores(s, w, temperature=0.8, balance=2.0, dual_start=near.dual)
    np.testing.assert_allclose(warm.masses, cold.masses, atol=1e-9)
    # stationarity of the dual: rho(eta) = softmax(-eta / lambda)
    beta = np.exp(-warm.dual / 2.0 - np.max(-warm.dual / 2.0))
    np.testing.assert_allclose(warm.masses, beta / beta.sum(), atol=1e-6)


def test_a_nearby_slider_move_costs_at_most_two_passes(scores, monkeypatch):
    s, w = scores
    previous = reassign.q_from_scores(s, w, temperature=1.0, balance=1.0)
    calls = _passes(monkeypatch)
    moved = reassign.q_from_scores(s, w, temperature=1.05, balance=1.0, dual_start=previous.dual)
    assert calls[0] <= 2
    assert dual.duality_gap(moved.masses, moved.dual, 1.0) <= 1e-10


def test_memberships_are_computed_on_demand_and_match_the_masses(scores):
    s, w = scores
    result = reassign.q_from_scores(s, w, temperature=0.6, balance=3.0)
    q = result.q
    assert q.shape == s.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(w @ q / w.sum(), result.masses, atol=1e-6)
