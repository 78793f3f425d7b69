"""Named mixtures side by side on Mix & Export (AppTest on this module's copy of the sample)."""

import copy

import numpy as np
import pytest
from scipy import stats

from gem_app.app import session_keys as keys
from gem_app.app.mixes import compare_documents
from gem_app.export.saved import load_saved_mixture
from gem_app.viz.mixtures import NATURAL
from tests.app.helpers import frame_with, new_session, open_page, plotly_array, plotly_figures


def _save(at, tau: float, name: str, max_epochs: float = 0.0):
    at.slider(key=keys.MIX_TAU).set_value(tau).run()
    at.slider(key=keys.MIX_EPOCHS).set_value(max_epochs).run()
    at.text_input(key=keys.MIX_NAME).set_value(name).run()
    at.button(key=keys.MIX_SAVE).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"Saved as mixtures/{name}" in s.value for s in at.success)


def _comparison_traces(at) -> dict:
    (figure,) = [
        f for f in plotly_figures(at) if any(t.get("name") == "entropy" for t in f["data"])
    ]
    return {t["name"]: t for t in figure["data"]}


def test_save_two_mixtures_and_compare_them(app_env):
    at = open_page(new_session(), "mix")
    assert any("Save mixtures above" in c.value for c in at.caption)
    _save(at, 2.0, "hot")
    _save(at, 0.5, "cold", max_epochs=6.0)
    at.multiselect(key=keys.MIX_COMPARE).set_value(["hot", "cold"]).run()
    assert not at.exception, [e.value for e in at.exception]
    docs = {name: load_saved_mixture(name, app_env) for name in ("hot", "cold")}
    assert docs["hot"]["mixing"]["tau"] == 2.0 and docs["cold"]["mixing"]["tau"] == 0.5
    traces = _comparison_traces(at)
    natural = np.array([d["natural_share"] for d in docs["hot"]["domains"]])
    np.testing.assert_allclose(plotly_array(traces[NATURAL]["y"]), natural)
    entropies, kls = [], []
    for m, name in enumerate(("hot", "cold")):
        weights = np.array([d["weight"] for d in docs[name]["domains"]])
        np.testing.assert_allclose(plotly_array(traces[name]["y"]), weights, atol=1e-12)
        entropies.append(stats.entropy(weights))
        kls.append(stats.entropy(weights, natural))
        # the saved document's own summary agrees with the recomputed one
        assert docs[name]["mixing"]["entropy"] == pytest.approx(entropies[m], abs=1e-9)
        assert docs[name]["mixing"]["kl_to_natural"] == pytest.approx(kls[m], abs=1e-9)
    np.testing.assert_allclose(plotly_array(traces["entropy"]["y"]), entropies, atol=1e-12)
    np.testing.assert_allclose(
        plotly_array(traces["effective_domains"]["y"]), np.exp(entropies), atol=1e-9
    )
    np.testing.assert_allclose(plotly_array(traces["kl_to_natural"]["y"]), kls, atol=1e-12)
    assert entropies[0] > entropies[1]  # hotter: closer to uniform
    cold_epochs = max(d["epochs"] for d in docs["cold"]["domains"])
    assert cold_epochs <= 6.0 + 1e-9  # the cap held
    np.testing.assert_allclose(
        plotly_array(traces["largest_epochs"]["y"]),
        [max(d["epochs"] for d in docs["hot"]["domains"]), cold_epochs],
    )
    cap = plotly_array(traces["epoch_cap"]["y"]).astype(float)
    assert np.isnan(cap[0]) and cap[1] == 6.0
    table = frame_with(at, "effective_domains")
    assert table["mixture"].tolist() == ["hot", "cold"]
    np.testing.assert_allclose(table["entropy"], entropies, atol=1e-12)
    first = docs["hot"]["domains"][0]
    np.testing.assert_allclose(
        table[f"w[{first['id']}]"], [first["weight"], docs["cold"]["domains"][0]["weight"]]
    )

    # continue from a saved mixture: Mix & Export shows exactly its weights
    at.selectbox(key=keys.MIX_COMPARE_PICK).set_value("cold").run()
    at.button(key=keys.MIX_COMPARE_USE).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key=keys.MIX_SOURCE).value == "saved: cold"
    shown = frame_with(at, "weight")
    by_id = {d["id"]: d["weight"] for d in docs["cold"]["domains"]}
    np.testing.assert_allclose(shown["weight"], [by_id[i] for i in shown["domain"]], atol=1e-9)


def test_mixtures_over_other_domains_are_not_compared(app_env):
    at = open_page(new_session(), "mix")
    _save(at, 1.0, "natural")
    doc = load_saved_mixture("natural", app_env)
    fewer = copy.deepcopy(doc)
    fewer["domains"] = fewer["domains"][:-1]
    with pytest.raises(ValueError, match="mixture 'fewer' is over other domains than 'natural'"):
        compare_documents({"natural": doc, "fewer": fewer})
    with pytest.raises(ValueError, match="at least one"):
        compare_documents({})
    # any order of the same domains lines up by id
    shuffled = copy.deepcopy(doc)
    shuffled["domains"] = shuffled["domains"][::-1]
    both = compare_documents({"natural": doc, "shuffled": shuffled})
    np.testing.assert_allclose(both.weights[0], both.weights[1])
    assert both.kl_to_natural == pytest.approx([0.0, 0.0], abs=1e-12)
