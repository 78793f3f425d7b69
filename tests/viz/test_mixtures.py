"""Named mixtures side by side (gem_app.viz.mixtures): every number reaches its panel."""

import numpy as np
import pytest
from scipy import stats

from gem_app.viz.mixtures import METRIC_PANELS, NATURAL, mixtures_figure
from tests.viz.test_viz import _dict


@pytest.fixture()
def three_mixtures():
    rng = np.random.default_rng(3)
    natural = rng.dirichlet(np.ones(5))
    weights = np.vstack([natural, rng.dirichlet(np.ones(5)), np.full(5, 0.2)])
    return ["natural-tau1", "random", "uniform"], [f"d{k}" for k in range(5)], weights, natural


def _traces(fig):
    return {t["name"]: t for t in _dict(fig)["data"]}


def test_weights_and_metrics_reach_their_panels(three_mixtures):
    names, domains, weights, natural = three_mixtures
    entropy = stats.entropy(weights, axis=1)
    kl = np.array([stats.entropy(w, natural) for w in weights])
    fig = mixtures_figure(
        names,
        domains,
        weights,
        natural,
        entropy=entropy,
        effective_domains=np.exp(entropy),
        kl_to_natural=kl,
        largest_epochs=[1.0, 2.5, 4.0],
        epoch_cap=[np.nan, 3.0, 4.0],
    )
    traces = _traces(fig)
    assert list(traces) == [NATURAL, *names, *METRIC_PANELS, "epoch_cap"]
    np.testing.assert_allclose(traces[NATURAL]["y"], natural)
    assert traces[NATURAL]["x"] == domains
    for m, name in enumerate(names):  # one bar per domain, in the domains' order
        assert traces[name]["x"] == domains
        np.testing.assert_allclose(traces[name]["y"], weights[m])
    np.testing.assert_allclose(traces["entropy"]["y"], entropy)
    np.testing.assert_allclose(traces["effective_domains"]["y"], np.exp(entropy))
    np.testing.assert_allclose(traces["kl_to_natural"]["y"], kl)
    np.testing.assert_allclose(traces["largest_epochs"]["y"], [1.0, 2.5, 4.0])
    cap = np.array(traces["epoch_cap"]["y"], dtype=float)
    assert np.isnan(cap[0]) and cap[1:].tolist() == [3.0, 4.0]
    for key in METRIC_PANELS:  # the bottom panels name the mixtures
        assert traces[key]["x"] == names
    # the uniform mixture: H = log 5, exp H = 5 domains
    assert traces["effective_domains"]["y"][2] == pytest.approx(5.0)
    # the top panel spans the row, the four metric panels share the second row
    layout = _dict(fig)["layout"]
    titles = [a["text"] for a in layout["annotations"]]
    assert titles == ["Weight per domain", *METRIC_PANELS.values()]


def test_mismatched_shapes_are_refused(three_mixtures):
    names, domains, weights, natural = three_mixtures
    metrics = dict(
        entropy=np.zeros(3),
        effective_domains=np.ones(3),
        kl_to_natural=np.zeros(3),
        largest_epochs=np.zeros(3),
        epoch_cap=np.zeros(3),
    )
    with pytest.raises(ValueError, match=r"weights has shape \(3, 4\), expected \(3, 5\)"):
        mixtures_figure(names, domains, weights[:, :4], natural, **metrics)
    with pytest.raises(ValueError, match="entropy"):
        mixtures_figure(names, domains, weights, natural, **(metrics | {"entropy": [1.0]}))
    with pytest.raises(ValueError, match="at least one mixture"):
        mixtures_figure([], domains, np.zeros((0, 5)), natural, **metrics)
