"""Tests of gem_app.mixing.weights against independent references (scipy root finding, hand formulas)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq
from scipy.special import softmax
from scipy.stats import entropy as scipy_entropy

from gem_app.mixing.strategies import (
    doremi_update,
    excess_losses_from_frame,
    read_excess_losses_csv,
    regmix_candidates,
)
from gem_app.mixing.weights import _capped_softmax, mixing_report, mixture_weights
from gem_app.utils.information import entropy, kl_divergence


def _random_shares(rng, k, zeros=0):
    rho = rng.dirichlet(np.full(k, 0.7))
    if zeros:
        rho[rng.choice(k, zeros, replace=False)] = 0.0
        rho /= rho.sum()
    return rho


def _reference_capped(utility, caps, tau):
    """Independent solve of sum_k min(c_k, exp((u_k - nu)/tau)) = 1 by Brent's method on nu."""

    def excess(nu):
        with np.errstate(over="ignore"):
            return np.minimum(caps, np.exp((utility - nu) / tau)).sum() - 1.0

    lo = utility.min() - tau * 50.0  # every cluster capped: sum of caps > 1
    hi = utility.max() + tau * 50.0  # every weight below exp(-50)
    nu = brentq(excess, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=1000)
    with np.errstate(over="ignore"):
        return np.minimum(caps, np.exp((utility - nu) / tau))


# ----------------------------------------------------------------------------- w(tau)
@pytest.mark.parametrize("seed", range(5))
def test_temperature_one_returns_natural_shares(seed):
    rng = np.random.default_rng(seed)
    rho = _random_shares(rng, 40, zeros=5)
    w = mixture_weights(rho, temperature=1.0)
    np.testing.assert_allclose(w, rho, rtol=1e-12, atol=1e-15)
    assert w[rho == 0].max() == 0.0


def test_unnormalised_shares_are_normalised():
    w = mixture_weights([2.0, 6.0, 0.0, 2.0])
    np.testing.assert_allclose(w, [0.2, 0.6, 0.0, 0.2], rtol=1e-14)


@pytest.mark.parametrize("tau", [1e-3, 0.05, 0.7, 3.0, 40.0, 1e3])
def test_uncapped_weights_are_tempered_softmax(tau):
    rng = np.random.default_rng(1)
    rho = _random_shares(rng, 30)
    expected = softmax(np.log(rho) / tau)
    w = mixture_weights(rho, temperature=tau)
    np.testing.assert_allclose(w, expected, rtol=1e-9, atol=1e-300)
    assert abs(w.sum() - 1.0) < 1e-12


def test_limits_uniform_and_one_hot():
    rng = np.random.default_rng(2)
    rho = _random_shares(rng, 12, zeros=2)
    support = rho > 0
    hot = mixture_weights(rho, temperature=1e-3)
    assert hot[np.argmax(rho)] == pytest.approx(1.0, abs=1e-12)
    gaps = [
        np.abs(mixture_weights(rho, temperature=t)[support] - 1 / support.sum()).max()
        for t in (1.0, 10.0, 100.0, 1e4)
    ]
    assert np.all(np.diff(gaps) < 0)
    assert gaps[-1] < 1e-3
    assert mixture_weights(rho, temperature=1e4)[~support].max() == 0.0


def test_entropy_is_monotone_in_temperature_with_and_without_caps():
    rng = np.random.default_rng(3)
    rho = _random_shares(rng, 25)
    tokens = rho * 1e6
    taus = np.logspace(-3, 3, 61)
    for caps in ({}, {"tokens": tokens, "max_epochs": 3.0, "budget": 1.5e6}):
        h = [entropy(mixture_weights(rho, temperature=t, **caps)) for t in taus]
        assert np.all(np.diff(h) >= -1e-10), caps
        assert h[-1] > h[0] + 1.0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tau", [1e-3, 0.3, 1.0, 5.0, 1e3])
def test_capped_weights_match_root_finding_and_respect_caps(seed, tau):
    rng = np.random.default_rng(seed)
    k = 20
    rho = _random_shares(rng, k)
    tokens = rng.uniform(1.0, 100.0, size=k)
    max_epochs, budget = 2.0, 0.6 * 2.0 * tokens.sum()
    w = mixture_weights(rho, temperature=tau, tokens=tokens, max_epochs=max_epochs, budget=budget)
    caps = max_epochs * tokens / budget
    assert np.all(w <= caps)
    assert abs(w.sum() - 1.0) < 1e-12
    reference = _reference_capped(np.log(rho), caps, tau)
    np.testing.assert_allclose(w, reference, rtol=1e-7, atol=1e-12)


def test_capped_solution_is_the_entropy_regularised_optimum():
    """Hand check with three clusters: cap the big one, split the rest by their tempered shares."""
    rho = np.array([0.7, 0.2, 0.1])
    tokens = np.array([300.0, 500.0, 300.0])
    w = mixture_weights(rho, tokens=tokens, max_epochs=1.0, budget=1000.0)
    assert w[0] == pytest.approx(0.3, abs=1e-15)
    np.testing.assert_allclose(w[1:], 0.7 * np.array([2 / 3, 1 / 3]), rtol=1e-14)


def test_small_temperature_with_caps_fills_by_utility_order():
    rng = np.random.default_rng(7)
    rho = _random_shares(rng, 15)
    tokens = rng.uniform(1.0, 10.0, size=15)
    budget = tokens.sum()
    caps = 1.0 * tokens / budget * 2.5
    w = mixture_weights(rho, temperature=1e-3, tokens=tokens, max_epochs=2.5, budget=budget)
    greedy, left = np.zeros(15), 1.0
    for k in np.argsort(-rho):
        greedy[k] = min(caps[k], left)
        left -= greedy[k]
    np.testing.assert_allclose(w, greedy, atol=1e-9)


def test_exactly_feasible_caps_give_the_caps():
    tokens = np.array([1.0, 3.0, 6.0])
    w = mixture_weights([0.5, 0.3, 0.2], tokens=tokens, max_epochs=1.0, budget=10.0)
    np.testing.assert_allclose(w, tokens / 10.0, rtol=1e-14)


def test_capped_softmax_rounding_never_exceeds_caps():
    rng = np.random.default_rng(11)
    for _ in range(200):
        scores = rng.normal(scale=rng.uniform(0.1, 30.0), size=50)
        caps = rng.uniform(0.0, 0.2, size=50) + 1e-9
        if caps.sum() < 1:
            caps *= 1.01 / caps.sum()
        w = _capped_softmax(scores, caps)
        assert np.all(w <= caps)
        assert abs(w.sum() - 1.0) < 1e-12


def test_gis_tilt_and_multipliers_match_the_utility_formula():
    rng = np.random.default_rng(4)
    rho = _random_shares(rng, 10)
    gis = rng.gamma(2.0, size=10)
    m = rng.uniform(0.2, 3.0, size=10)
    z = (gis - gis.mean()) / gis.std()
    tau, beta = 1.7, 0.8
    expected = softmax((np.log(rho) + beta * z + np.log(m)) / tau)
    w = mixture_weights(rho, temperature=tau, gis=gis, gis_strength=beta, multipliers=m)
    np.testing.assert_allclose(w, expected, rtol=1e-12)


def test_exclusions_and_mapping_multipliers():
    rho = np.array([0.1, 0.2, 0.3, 0.4])
    w = mixture_weights(rho, exclude=[3], multipliers={0: 2.0, 1: 0.0})
    np.testing.assert_allclose(w, np.array([0.2, 0.0, 0.3, 0.0]) / 0.5, rtol=1e-14)


def test_budget_without_max_epochs_sets_no_cap():
    rho = np.array([0.9, 0.1])
    w = mixture_weights(rho, tokens=[1.0, 1.0], budget=1e9)
    np.testing.assert_allclose(w, rho, rtol=1e-14)


def test_infeasible_caps_raise_clearly():
    tokens = np.array([10.0, 20.0, 30.0])
    with pytest.raises(ValueError, match="infeasible epoch caps"):
        mixture_weights([0.2, 0.3, 0.5], tokens=tokens, max_epochs=2.0, budget=121.0)
    # excluding a cluster removes its tokens from what the caps can hold
    with pytest.raises(ValueError, match="infeasible"):
        mixture_weights([0.2, 0.3, 0.5], tokens=tokens, max_epochs=2.0, budget=90.0, exclude=[2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"multipliers": [1.0, -0.5, 1.0]}, "cluster 1"),
        ({"multipliers": {0: -1.0}}, "cluster 0"),
        ({"multipliers": [1.0, 1.0]}, "shape"),
        ({"exclude": [0, 1, 2]}, "all clusters are excluded"),
        ({"multipliers": [0.0, 0.0, 0.0]}, "all clusters are excluded"),
        ({"exclude": [3]}, "unknown cluster id 3"),
        ({"exclude": [-1]}, "unknown cluster id -1"),
        ({"exclude": ["news"]}, "unknown cluster id 'news'"),
        ({"multipliers": {7: 2.0}}, "unknown cluster id 7"),
        ({"max_epochs": 2.0}, "needs tokens"),
        ({"tokens": [1.0, -2.0, 1.0], "max_epochs": 1.0}, "cluster 1"),
        ({"tokens": [1.0, 2.0]}, "expected 3"),
        ({"tokens": [1.0, 2.0, 3.0], "max_epochs": 0.0}, "max_epochs"),
        ({"tokens": [1.0, 2.0, 3.0], "budget": -5.0}, "budget"),
        ({"gis": [1.0, np.inf, 0.0], "gis_strength": 1.0}, "cluster 1"),
    ],
)
def test_bad_inputs_raise_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mixture_weights([0.2, 0.3, 0.5], **kwargs)


@pytest.mark.parametrize(
    ("rho", "message"),
    [
        ([0.5, -0.1, 0.6], "cluster 1"),
        ([0.0, 0.0], "sums to 0"),
        ([], "empty"),
        ([[0.5]], "one-dim"),
    ],
)
def test_bad_shares_raise(rho, message):
    with pytest.raises(ValueError, match=message):
        mixture_weights(rho)


# ----------------------------------------------------------------------------- report
def test_report_quantities_match_scipy_and_hand_formulas():
    rng = np.random.default_rng(5)
    rho = _random_shares(rng, 8)
    tokens = rng.uniform(10.0, 100.0, size=8)
    budget = 1.2 * tokens.sum()
    report = mixing_report(
        rho, temperature=4.0, tokens=tokens, max_epochs=3.0, budget=budget, exclude=[2]
    )
    w = report.weights
    assert report.entropy == pytest.approx(scipy_entropy(w), rel=1e-12)
    assert report.effective_domains == pytest.approx(math.exp(scipy_entropy(w)), rel=1e-12)
    assert report.kl_to_natural == pytest.approx(scipy_entropy(w, rho), rel=1e-10)
    np.testing.assert_allclose(report.epochs, w * budget / tokens, rtol=1e-14)
    assert report.epochs.max() <= 3.0 + 1e-12
    assert report.excluded.tolist() == [k == 2 for k in range(8)]
    frame = report.to_frame()
    assert list(frame["weight"]) == list(w)
    assert {"natural_share", "tokens", "allocated_tokens", "epochs", "excluded"} <= set(frame)
    assert report.summary()["budget"] == budget


def test_report_without_tokens_and_with_labels():
    report = mixing_report([0.5, 0.5], labels=["code", "news"])
    assert report.epochs is None and "epochs" not in report.to_frame()
    assert list(report.to_frame()["label"]) == ["code", "news"]
    assert report.effective_domains == pytest.approx(2.0, rel=1e-14)
    with pytest.raises(ValueError, match="labels"):
        mixing_report([0.5, 0.5], labels=["one"])


def test_entropy_and_kl_helpers():
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])
    assert entropy(p) == pytest.approx(math.log(2), rel=1e-15)
    assert kl_divergence(p, q) == pytest.approx(math.log(2), rel=1e-15)
    assert kl_divergence(q, p) == math.inf


# ----------------------------------------------------------------------------- RegMix
def test_regmix_candidates_are_seeded_bounded_and_in_the_simplex():
    rng = np.random.default_rng(6)
    prior = _random_shares(rng, 10, zeros=1)
    kwargs = {"temperature": 2.0, "max_usage": 4.0, "min_weight": 1e-3, "random_state": 42}
    a = regmix_candidates(prior, 50, **kwargs)
    b = regmix_candidates(prior, 50, **kwargs)
    c = regmix_candidates(prior, 50, **{**kwargs, "random_state": 43})
    assert a.shape == (50, 10)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(a <= np.minimum(1.0, 4.0 * prior)[None, :])
    assert np.all((a == 0) | (a >= 1e-3))
    assert np.all(a[:, prior == 0] == 0)


def test_regmix_mean_is_the_tempered_prior_without_rejection():
    prior = np.array([0.6, 0.25, 0.1, 0.05])
    cands = regmix_candidates(
        prior, 4000, temperature=2.0, max_usage=None, min_weight=0.0, random_state=0
    )
    tempered = np.sqrt(prior) / np.sqrt(prior).sum()
    np.testing.assert_allclose(cands.mean(axis=0), tempered, atol=0.02)


def test_regmix_token_bounds_and_errors():
    prior = np.array([0.5, 0.3, 0.2])
    tokens = np.array([50.0, 30.0, 20.0])
    cands = regmix_candidates(
        prior, 20, max_usage=1.5, tokens=tokens, budget=80.0, random_state=1, min_weight=0.0
    )
    assert np.all(cands <= np.minimum(1.0, 1.5 * tokens / 80.0))
    with pytest.raises(ValueError, match="infeasible"):
        regmix_candidates(prior, 5, max_usage=0.5)
    with pytest.raises(ValueError, match="min_weight"):
        regmix_candidates(prior, 5, min_weight=0.5)
    with pytest.raises(ValueError, match="n_candidates"):
        regmix_candidates(prior, 0)
    with pytest.raises(ValueError, match="candidates accepted"):
        regmix_candidates(prior, 50, max_usage=1.0001, max_draws=10, random_state=0)


# ----------------------------------------------------------------------------- DoReMi
def _doremi_reference(weights, excess, eta, eps):
    scores = [math.log(w) + eta * max(e, 0.0) for w, e in zip(weights, excess, strict=True)]
    top = max(scores)
    expo = [math.exp(s - top) for s in scores]
    total = sum(expo)
    return [(1 - eps) * x / total + eps / len(weights) for x in expo]


@pytest.mark.parametrize(("eta", "eps"), [(1.0, 1e-3), (0.3, 0.0), (5.0, 0.1)])
def test_doremi_update_matches_the_reference_formula(eta, eps):
    rng = np.random.default_rng(8)
    weights = rng.dirichlet(np.ones(6))
    excess = rng.normal(size=6)
    got = doremi_update(weights, excess, step_size=eta, smoothing=eps)
    np.testing.assert_allclose(got, _doremi_reference(weights, excess, eta, eps), rtol=1e-12)
    assert abs(got.sum() - 1.0) < 1e-12


def test_doremi_negative_excess_counts_as_zero_and_bad_inputs():
    w = np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(doremi_update(w, [-1.0, -2.0, 0.0], smoothing=0.0), w, rtol=1e-14)
    with pytest.raises(ValueError, match="expected 3"):
        doremi_update(w, [1.0, 2.0])
    with pytest.raises(ValueError, match="smoothing"):
        doremi_update(w, [1.0, 2.0, 3.0], smoothing=2.0)
    with pytest.raises(ValueError, match="step_size"):
        doremi_update(w, [1.0, 2.0, 3.0], step_size=0.0)


def test_excess_loss_csv_is_read_in_domain_order(tmp_path):
    path = tmp_path / "excess.csv"
    path.write_text("domain,excess_loss\nnews,0.5\ncode,-0.25\nNA,1\n", encoding="utf-8")
    got = read_excess_losses_csv(path, ["code", "NA", "news"])
    np.testing.assert_array_equal(got, [-0.25, 1.0, 0.5])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"domain": ["code"], "excess_loss": [0.1]}, r"missing \['news'\]"),
        ({"domain": ["code", "news", "web"], "excess_loss": [0.1, 0.2, 0.3]}, r"extra \['web'\]"),
        ({"domain": ["code", "code", "news"], "excess_loss": [0.1, 0.2, 0.3]}, "more than once"),
        ({"domain": ["code", "news"], "excess_loss": [0.1, "high"]}, "'news' \\(row 1\\)"),
        ({"domain": ["code", "news"], "loss": [0.1, 0.2]}, "excess_loss"),
    ],
)
def test_excess_loss_table_errors(table, message):
    with pytest.raises(ValueError, match=message):
        excess_losses_from_frame(pd.DataFrame(table), ["code", "news"])


def test_report_records_the_curator_multipliers_with_exclusions_at_zero():
    rho = np.array([0.1, 0.2, 0.3, 0.4])
    report = mixing_report(rho, temperature=2.0, multipliers={1: 2.5, 3: 0.5}, exclude=[2])
    np.testing.assert_array_equal(report.multipliers, [1.0, 2.5, 0.0, 0.5])
    np.testing.assert_array_equal(report.excluded, [False, False, True, False])
    # the weights use them: w_k proportional to (rho_k m_k)^(1/tau) on the active clusters
    expected = np.array([0.1, 0.5, 0.0, 0.2]) ** 0.5
    np.testing.assert_allclose(report.weights, expected / expected.sum(), rtol=1e-13)
