"""Semantic search on the Map page (AppTest, a stub encoder standing in for MiniLM)."""

import numpy as np
import pytest
import streamlit as st

from gem_app.app import session_keys as keys
from gem_app.app import state as app_state
from gem_app.io import encoder as encoder_module
from tests.app.helpers import frame_with, new_session, open_page, plotly_array, plotly_figures


class PlantedEncoder:
    """Answers every query with the stored embedding of one document."""

    def __init__(self, vector):
        self.vector = vector

    def encode(self, texts, **kwargs):
        return np.tile(self.vector, (len(texts), 1))


@pytest.fixture
def planted(app_env, monkeypatch):
    view = app_state.fit_view(app_state.open_workspace(app_env), app_state.SAMPLE_FIT)
    row = 1234
    monkeypatch.setattr(
        encoder_module, "load_encoder", lambda *a, **k: PlantedEncoder(view.run.embeddings[row])
    )
    st.cache_resource.clear()  # the page's shared model: this test's stub, not a real one
    st.cache_data.clear()
    yield view, row
    st.cache_resource.clear()
    st.cache_data.clear()


def test_search_stars_the_nearest_documents_and_lists_them(planted):
    view, row = planted
    at = open_page(new_session(), "map")
    at.segmented_control(key=keys.MAP_SHAPE).set_value("Map 2D").run()
    at.number_input(key=keys.MAP_TOP_K).set_value(8).run()
    at.text_input(key=keys.MAP_QUERY).input("anything at all").run()
    assert not at.exception, [e.value for e in at.exception]
    hits = frame_with(at, "similarity")
    # independent reference: cosine after the fit's correction, brute force over all documents
    corrected = np.asarray(view.model.transform(view.run.embeddings), dtype=np.float64)
    scores = corrected @ corrected[row]
    reference = np.argsort(-scores, kind="stable")[:8]
    assert hits["row"].tolist() == reference.tolist() and hits["row"][0] == row
    np.testing.assert_allclose(hits["similarity"], scores[reference], rtol=1e-5)
    assert hits["similarity"][0] == pytest.approx(1.0, abs=1e-5)
    clusters = view.hard_labels[reference]
    np.testing.assert_allclose(hits["probability"], view.q[reference, clusters], rtol=1e-6)
    assert [c.split(":")[0] for c in hits["cluster"]] == [str(k) for k in clusters]
    assert any(c.value.startswith("Nearest clusters") for c in at.caption)
    (figure,) = plotly_figures(at)
    (stars,) = [t for t in figure["data"] if t.get("name") == "search hits"]
    assert len(plotly_array(stars["x"])) == 8
    # the substring filter stays
    at.text_input(key=keys.MAP_SEARCH).input("zzzz-no-such-word").run()
    (documents,) = [
        df.value
        for df in at.dataframe
        if "probability" in df.value.columns and "similarity" not in df.value.columns
    ]
    assert len(documents) == 0  # the cluster's documents, filtered by the substring
    assert frame_with(at, "similarity")["row"].tolist() == reference.tolist()  # hits stay


def test_search_on_the_globe(planted):
    at = open_page(new_session(), "map")
    at.text_input(key=keys.MAP_QUERY).input("anything").run()
    (figure,) = plotly_figures(at)
    (stars,) = [t for t in figure["data"] if t.get("name") == "search hits"]
    assert stars["type"] == "scatter3d" and len(plotly_array(stars["x"])) == 20
