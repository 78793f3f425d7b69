"""Regressors from mixture weights to held-out loss, targets and their selection."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from gem_app.evaluate.proxy import (
    BoostedRegressor,
    LogLinearRegressor,
    parse_target,
    select_regressor,
)
from gem_app.evaluate.proxy.regress import cross_val_predict_target

IDS = ["0", "1", "2", "3"]


def _law(n=40, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.dirichlet(np.ones(4), n)
    c = np.array([1.2, 1.0, 0.8, 1.1])
    B = rng.normal(0, 0.4, (4, 4))
    Y = np.exp(c + W @ B) * np.exp(noise * rng.normal(size=(n, 4)))
    return W, Y, c, B


def test_log_linear_recovers_a_planted_law():
    W, Y, c, B = _law()
    law = LogLinearRegressor(alpha=0.0).fit(W, Y)
    fresh = np.random.default_rng(9).dirichlet(np.ones(4), 50)
    assert np.allclose(law.predict(fresh), np.exp(c + fresh @ B), rtol=1e-9)
    # weights sum to 1: the law is identified up to one shift shared by intercept and beta
    shift = law.coef_ - B
    assert np.allclose(shift, shift[0:1, :], atol=1e-8)
    assert np.allclose(law.intercept_ + shift[0], c, atol=1e-8)


def test_log_linear_with_noise_ranks_mixtures_and_wins_selection():
    W, Y, _, _ = _law(noise=0.01)
    target = parse_target("mean", IDS, np.full(4, 0.25))
    choice = select_regressor(W, Y, target, random_state=0)
    assert choice.name == "log-linear"
    assert choice.cv_spearman > 0.9 and choice.n == 40
    assert set(choice.scores) == {"log-linear", "gbm"}
    oof = cross_val_predict_target("log-linear", W, Y, target, random_state=0)
    assert np.allclose(oof, choice.oof)
    assert spearmanr(oof, target(Y)).statistic == pytest.approx(choice.cv_spearman)


def test_boosting_wins_on_a_step_law():
    rng = np.random.default_rng(1)
    W = rng.dirichlet(np.ones(4), 80)
    step = np.where(W[:, :1] > 0.3, 2.0, 3.0) + np.where(W[:, 1:2] > 0.2, 0.0, 0.5)
    Y = np.repeat(step, 4, axis=1)
    target = parse_target("mean", IDS, np.full(4, 0.25))
    choice = select_regressor(W, Y, target, random_state=0)
    assert choice.name == "gbm"
    assert choice.scores["gbm"] > choice.scores["log-linear"]
    assert isinstance(choice.model, BoostedRegressor)
    assert choice.model.predict(W).shape == (80, 4)


def test_targets():
    bpb = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 1.0, 1.0, 1.0]])
    share = np.array([0.1, 0.2, 0.3, 0.4])
    assert parse_target("mean", IDS, share)(bpb).tolist() == [2.5, 1.75]
    assert parse_target("worst", IDS, share)(bpb).tolist() == [4.0, 4.0]
    assert np.allclose(parse_target("overall", IDS, share)(bpb), bpb @ share)
    assert parse_target("domain:2", IDS, share)(bpb).tolist() == [3.0, 1.0]
    scored = np.array([True, True, True, False])
    assert parse_target("worst", IDS, share, scored)(bpb).tolist() == [3.0, 4.0]
    assert np.allclose(parse_target("mean", IDS, share, scored)(bpb), [2.0, 2.0])
    with pytest.raises(ValueError, match="unknown target 'best'"):
        parse_target("best", IDS, share)
    with pytest.raises(ValueError, match="unknown domain '7'"):
        parse_target("domain:7", IDS, share)
    with pytest.raises(ValueError, match="no held-out text"):
        parse_target("domain:3", IDS, share, scored)


def test_bad_input():
    with pytest.raises(ValueError, match="positive losses"):
        LogLinearRegressor().fit(np.eye(3), -np.ones((3, 3)))
    with pytest.raises(ValueError, match="at least 4"):
        select_regressor(np.eye(3), np.ones((3, 3)), parse_target("mean", IDS[:3], np.ones(3) / 3))
    with pytest.raises(ValueError, match="shape"):
        LogLinearRegressor().fit(np.ones(3), np.ones((3, 1)))
