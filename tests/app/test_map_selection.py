"""Linked selection: points selected on the 2D map fill a panel and carry to Mix & Export."""

import numpy as np

from gem_app.app import session_keys as keys
from tests.app.helpers import frame_with, new_session, open_page, plotly_array, plotly_figures


def _select(at, rows_wanted):
    """Select points on the 2D map. AppTest cannot drag a lasso, so the selection event is set
    where Streamlit keeps it: the chart's widget state under its key (what the browser sends)."""
    (figure,) = plotly_figures(at)
    (trace,) = [t for t in figure["data"] if t.get("name") == "documents"]
    custom = plotly_array(trace["customdata"]).reshape(-1, 2)
    index = [int(np.flatnonzero(custom[:, 0] == r)[0]) for r in rows_wanted]
    points = [
        {"curve_number": 0, "point_number": i, "point_index": i, "customdata": custom[i].tolist()}
        for i in index
    ]
    at.session_state[keys.MAP_FLAT] = {
        "selection": {"points": points, "point_indices": index, "box": [], "lasso": []}
    }
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return custom


def _map_2d():
    at = open_page(new_session(), "map")
    at.segmented_control(key=keys.MAP_SHAPE).set_value("Map 2D").run()
    return at


def test_selection_fills_the_panel_and_excludes_its_clusters_on_mix(app_env):
    at = _map_2d()
    (figure,) = plotly_figures(at)
    (trace,) = [t for t in figure["data"] if t.get("name") == "documents"]
    custom = plotly_array(trace["customdata"]).reshape(-1, 2)
    two = np.unique(custom[:, 1])[:2]  # two clusters: 6 documents of the first, 3 of the second
    rows = np.concatenate(
        [custom[custom[:, 1] == two[0], 0][:6], custom[custom[:, 1] == two[1], 0][:3]]
    )
    _select(at, rows)
    assert any(h.value == "Selection: 9 documents in 2 clusters" for h in at.subheader)
    by_cluster = frame_with(at, "GIS terms")
    assert by_cluster["cluster"].tolist() == [two[0], two[1]]
    assert by_cluster["selected"].tolist() == [6, 3]
    assert all(by_cluster["GIS terms"].str.len() > 0)
    categories = frame_with(at, "category")
    assert categories["selected"].sum() == 9
    documents = frame_with(at, "row")
    assert sorted(documents["row"].tolist()) == sorted(rows.tolist())
    assert set(documents["cluster"]) == set(two.tolist())

    at.button(key=keys.MAP_EXCLUDE).click().run()
    assert any(f"excluded clusters {two[0]}, {two[1]}" in i.value for i in at.info)

    open_page(at, "mix")
    weights = frame_with(at, "weight").set_index("domain")["weight"]
    assert weights[str(two[0])] == 0.0 and weights[str(two[1])] == 0.0
    assert abs(weights.sum() - 1.0) < 1e-9
    editor = frame_with(at, "multiplier").set_index("domain")  # the per-domain editor shows it
    assert editor["exclude"][str(two[0])] and editor["exclude"][str(two[1])]
    assert editor["exclude"].sum() == 2


def test_boosting_a_clicked_cluster_multiplies_its_weight(app_env):
    reference = open_page(new_session(), "mix")
    natural = frame_with(reference, "weight").set_index("domain")["natural_share"]
    at = _map_2d()
    (figure,) = plotly_figures(at)
    (trace,) = [t for t in figure["data"] if t.get("name") == "documents"]
    custom = plotly_array(trace["customdata"]).reshape(-1, 2)
    row, cluster = custom[10]
    _select(at, [row])  # one clicked point: its cluster
    assert any(h.value == "Selection: 1 documents in 1 clusters" for h in at.subheader)
    at.number_input(key=keys.MAP_BOOST_FACTOR).set_value(3.0).run()
    at.button(key=keys.MAP_BOOST).click().run()
    open_page(at, "mix")
    weights = frame_with(at, "weight").set_index("domain")["weight"]
    # tau = 1: w_k ∝ natural_k * m_k with m = 3 for the boosted cluster
    expected = natural.copy()
    expected[str(cluster)] *= 3.0
    expected /= expected.sum()
    np.testing.assert_allclose(weights[expected.index], expected, rtol=1e-6)
    # cleared on the Map: Mix & Export is back to natural
    open_page(at, "map")
    at.button(key=keys.MAP_CLEAR).click().run()
    open_page(at, "mix")
    weights = frame_with(at, "weight").set_index("domain")["weight"]
    np.testing.assert_allclose(weights[natural.index], natural, rtol=1e-6)
