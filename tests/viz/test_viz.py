"""Figure builders (gem_app.viz): the data reaches the figure, bad input is refused."""

import base64

import numpy as np
import pandas as pd
import pytest

from gem_app import viz


def _decode(value):
    """Plotly >= 6 writes numpy arrays in to_dict() as {"dtype", "bdata"[, "shape"]}."""
    if isinstance(value, dict) and "bdata" in value and "dtype" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        if "shape" in value:
            out = out.reshape([int(v) for v in str(value["shape"]).split(",")])
        return out.tolist()
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_decode(v) for v in value]
    return value


def _dict(fig):
    return _decode(fig.to_dict())


def test_objective_figure_carries_history():
    fig = _dict(viz.objective_figure([1.0, 2.0, 2.5]))
    np.testing.assert_allclose(fig["data"][0]["y"], [1.0, 2.0, 2.5])
    with pytest.raises(ValueError):
        viz.objective_figure([])


def test_masses_figure_orders_by_mass():
    fig = _dict(viz.masses_figure([0.2, 0.5, 0.3], [10.0, 20.0, 30.0], ["a", "b", "c"]))
    np.testing.assert_allclose(fig["data"][0]["x"], [0.5, 0.3, 0.2])
    np.testing.assert_allclose(fig["data"][1]["x"], [20.0, 30.0, 10.0])
    assert fig["data"][0]["y"][0].startswith("1: b")
    with pytest.raises(ValueError, match="labels"):
        viz.masses_figure([0.5, 0.5], [1, 1], ["only one"])


def test_sweep_figure_marks_chosen_k():
    fig = _dict(viz.sweep_figure([2, 4, 6], [3.0, 1.0, 2.0], chosen=4))
    assert fig["data"][1]["x"] == [4] and fig["data"][1]["y"] == [1.0]
    with pytest.raises(ValueError, match="chosen"):
        viz.sweep_figure([2, 4], [1.0, 2.0], chosen=5)


def _sphere_points(n=20, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, 3))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_globe_categorical_colours_and_labels():
    xyz = _sphere_points()
    labels = np.arange(20) % 3
    fig = _dict(
        viz.globe_figure(
            xyz,
            labels,
            hover=[f"doc {i}" for i in range(20)],
            rows=np.arange(20) + 100,
            clusters=labels,
            centres=_sphere_points(3, 1),
            centre_labels=["a", "b", "c"],
        )
    )
    surface, points, text = fig["data"]
    assert surface["type"] == "surface" and surface["opacity"] < 0.5
    assert points["type"] == "scatter3d" and len(points["x"]) == 20
    colours = np.array(points["marker"]["color"])
    for k in range(3):  # one colour per category, distinct across categories
        assert len(set(colours[labels == k])) == 1
    assert len(set(colours)) == 3
    assert np.asarray(points["customdata"])[5].tolist() == [105, 2]
    assert "doc 5" in points["text"][5]
    assert text["text"] == ["a", "b", "c"]


def test_globe_numeric_colour_uses_scale():
    fig = _dict(viz.globe_figure(_sphere_points(), np.linspace(0, 1, 20)))
    marker = fig["data"][1]["marker"]
    assert marker["showscale"] is True
    np.testing.assert_allclose(marker["color"], np.linspace(0, 1, 20))


def test_globe_rejects_bad_shapes():
    with pytest.raises(ValueError, match="xyz"):
        viz.globe_figure(np.zeros((5, 2)), np.zeros(5))
    with pytest.raises(ValueError, match="colour"):
        viz.globe_figure(_sphere_points(), np.zeros(3))


def test_flat_map_is_webgl_with_bounds():
    fig = _dict(
        viz.flat_map_figure(
            np.array([0.0, 10.0]),
            np.array([5.0, -5.0]),
            np.array([0, 1]),
            centres_lonlat=np.array([[0.0, 5.0], [np.nan, np.nan]]),
            centre_labels=["x", "y"],
        )
    )
    assert fig["data"][0]["type"] == "scattergl"
    assert fig["data"][1]["text"] == ["x"]  # the empty cluster's label is left out
    assert fig["layout"]["xaxis"]["range"] == [-180, 180]


def _nodes():
    return pd.DataFrame(
        {
            "id": ["root", "0", "1", "0.0", "0.1"],
            "parent": ["", "root", "root", "0", "0"],
            "label": ["all", "a", "b", "a0", "a1"],
            "tokens": [10, 6, 4, 2, 4],
            "gis": [0.0, 0.3, 0.2, 0.1, 0.05],
        }
    )


@pytest.mark.parametrize(
    "builder, kind", [(viz.sunburst_figure, "sunburst"), (viz.treemap_figure, "treemap")]
)
def test_hierarchy_figures(builder, kind):
    trace = _dict(builder(_nodes()))["data"][0]
    assert trace["type"] == kind and trace["branchvalues"] == "total"
    assert list(trace["parents"]) == ["", "root", "root", "0", "0"]
    np.testing.assert_allclose(trace["values"], [10, 6, 4, 2, 4])
    np.testing.assert_allclose(trace["marker"]["colors"], [0.0, 0.3, 0.2, 0.1, 0.05])


def test_hierarchy_colour_scale_spans_the_clusters_not_the_root():
    nodes = _nodes()
    nodes.loc[0, "gis"] = 5.0  # the root's GIS is the sum over a split: it must not set the scale
    marker = _dict(viz.sunburst_figure(nodes))["data"][0]["marker"]
    assert (marker["cmin"], marker["cmax"]) == (0.05, 0.3)


def test_hierarchy_rejects_unknown_parent_and_missing_column():
    bad = _nodes()
    bad.loc[4, "parent"] = "9"
    with pytest.raises(ValueError, match="'9'"):
        viz.sunburst_figure(bad)
    with pytest.raises(ValueError, match="purity"):
        viz.treemap_figure(_nodes(), colour="purity")


def _table():
    return pd.DataFrame([[8.0, 2.0], [0.0, 10.0]], index=["net", "web"], columns=[0, 1])


def test_heatmap_row_shares():
    trace = _dict(viz.contingency_heatmap(_table(), cluster_labels={0: "a"}))["data"][0]
    np.testing.assert_allclose(trace["z"], [[0.8, 0.2], [0.0, 1.0]])
    assert trace["x"][0] == "0: a" and trace["x"][1] == "1"
    with pytest.raises(ValueError, match="normalise"):
        viz.contingency_heatmap(_table(), normalise="col")


def test_sankey_links_follow_the_table():
    link = _dict(viz.sankey_figure(_table(), min_share=0.15))["data"][0]["link"]
    triples = sorted(zip(link["source"], link["target"], link["value"], strict=True))
    assert triples == [(0, 2, 8.0), (1, 3, 10.0)]  # the 2.0 flow (10%) is below 15%


def test_weights_and_shift_figures():
    fig = _dict(viz.weights_figure([0.1, 0.6, 0.3], [0.3, 0.4, 0.3]))
    np.testing.assert_allclose(fig["data"][0]["x"], [0.6, 0.3, 0.1])
    np.testing.assert_allclose(fig["data"][1]["x"], [0.4, 0.3, 0.3])
    with pytest.raises(ValueError):
        viz.weights_figure([0.5, 0.5], [1.0])
    shift = _dict(viz.masses_shift_figure([0.5, 0.5], [0.4, 0.6]))
    np.testing.assert_allclose(shift["data"][1]["y"], [0.4, 0.6])
    epochs = _dict(viz.epochs_figure([1.0, 2.0], max_epochs=4))
    np.testing.assert_allclose(epochs["data"][0]["y"], [1.0, 2.0])


def test_palette_is_distinct():
    colours = viz.cluster_palette(40)
    assert len(set(colours)) == 40
