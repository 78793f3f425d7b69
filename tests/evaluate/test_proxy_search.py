"""Searching the capped simplex: the exact KL-regularised optimum, top-k averaging, projection."""

from __future__ import annotations

import numpy as np
import pytest

from gem_app.evaluate.proxy import (
    LogLinearRegressor,
    kl_objective,
    parse_target,
    project_to_caps,
    solve_kl,
    topk_average,
)
from gem_app.mixing.strategies import regmix_candidates

IDS = ["0", "1", "2"]


def _law():
    rng = np.random.default_rng(4)
    W = rng.dirichlet(np.ones(3), 30)
    B = np.array([[-1.2, 0.3, 0.2], [0.4, -0.9, 0.3], [0.2, 0.5, -0.4]])
    Y = np.exp(np.array([1.5, 1.3, 1.1]) + W @ B)
    return LogLinearRegressor(alpha=0.0).fit(W, Y)


def _grid(lo=(0.0, 0.0), hi=(1.0, 1.0), step=1 / 200):
    """Points of the 3-simplex with w0, w1 on a grid in [lo, hi]."""
    a = np.arange(lo[0], hi[0] + 1e-12, step)
    b = np.arange(lo[1], hi[1] + 1e-12, step)
    w0, w1 = np.meshgrid(a, b, indexing="ij")
    w = np.stack([w0.ravel(), w1.ravel(), 1 - w0.ravel() - w1.ravel()], axis=1)
    return w[(w[:, 2] >= -1e-12) & np.all(w >= -1e-12, axis=1)].clip(0, 1)


def _brute_force(objective, caps):
    """Minimum of ``objective`` over the capped simplex: a coarse grid, then a fine one."""
    best = None
    for step, width in ((1 / 200, None), (1 / 20000, 0.01)):
        if width is None:
            grid = _grid(step=step)
        else:
            lo, hi = np.maximum(best[:2] - width, 0), np.minimum(best[:2] + width, 1)
            grid = _grid(lo, hi, step)
        grid = grid[np.all(grid <= caps + 1e-12, axis=1)]
        values = objective(grid)
        best = grid[np.argmin(values)]
    return best, values.min()


@pytest.mark.parametrize("target_name", ["mean", "worst", "overall", "domain:1"])
@pytest.mark.parametrize("lam", [0.0, 0.05, 0.5])
def test_exact_solve_matches_a_brute_force_grid(target_name, lam):
    law = _law()
    prior = np.array([0.5, 0.3, 0.2])
    caps = np.array([0.6, 0.5, 0.45])
    target = parse_target(target_name, IDS, np.array([0.2, 0.5, 0.3]))
    w = solve_kl(law, target, prior, caps, lam=lam)
    assert w.sum() == pytest.approx(1.0) and np.all(w >= 0) and np.all(w <= caps + 1e-12)

    def objective(grid):
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(grid > 0, grid * np.log(grid / prior), 0.0).sum(axis=1)
        return target(law.predict(grid)) + lam * kl

    best, minimum = _brute_force(objective, caps)
    solved = kl_objective(w, law, target, prior, lam)
    assert solved <= minimum + 1e-9
    assert solved >= minimum - 1e-4  # the fine grid is 1/20000 apart
    assert np.abs(w - best).max() < 2e-3


def test_large_penalty_returns_the_prior_and_zero_prior_stays_zero():
    law = _law()
    target = parse_target("mean", IDS, np.ones(3) / 3)
    prior = np.array([0.5, 0.5, 0.0])
    w = solve_kl(law, target, prior, lam=1e6)
    assert np.allclose(w, prior, atol=1e-4)
    assert w[2] == 0.0


def test_topk_average_averages_the_best_predicted_candidates():
    rng = np.random.default_rng(0)
    candidates = rng.dirichlet(np.ones(3), 200)
    score = candidates[:, 0]  # lower is better: little of domain 0
    w, chosen = topk_average(lambda X: X[:, 0], candidates, top_k=10)
    assert set(chosen) == set(np.argsort(score)[:10])
    assert np.allclose(w, candidates[chosen].mean(axis=0))
    with pytest.raises(ValueError, match="top_k"):
        topk_average(lambda X: X[:, 0], candidates, top_k=0)


def test_caps_hold_for_candidates_projection_and_topk():
    prior = np.array([0.7, 0.2, 0.1])
    tokens = np.array([700.0, 200.0, 100.0])
    caps = 2.0 * tokens / 1000.0  # at most 2 epochs of each domain at a 1000-token budget
    draws = regmix_candidates(
        prior, 500, tokens=tokens, budget=1000.0, max_usage=2.0, random_state=0
    )
    assert np.all(draws <= caps + 1e-12)
    w, _ = topk_average(lambda X: X[:, 0], draws, top_k=50)
    assert np.all(w <= caps + 1e-12)
    projected = project_to_caps([0.1, 0.1, 0.8], caps)
    assert projected.sum() == pytest.approx(1.0)
    assert projected[2] == pytest.approx(caps[2])
    assert projected[0] == pytest.approx(projected[1])  # free domains keep their ratio
    with pytest.raises(ValueError, match="caps"):
        project_to_caps([0.0, 0.0, 1.0], caps)
