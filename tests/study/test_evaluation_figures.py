"""Evaluate-page figures (gem_app.viz.evaluation), from a finished study, via fig.to_dict()."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gem_app.study.report import delta_table, prediction_table, weights_table
from gem_app.viz.evaluation import (
    bpb_delta_heatmap,
    predicted_measured_figure,
    study_weights_figure,
)


def test_weights_figure_draws_each_mixture(finished_study):
    _, _, result = finished_study
    table = weights_table(result.study)
    assert list(table["weights"]) == ["natural", "recommended"]
    fig = study_weights_figure(table["domains"], table["weights"]).to_dict()
    assert [t["name"] for t in fig["data"]] == ["natural", "recommended"]
    assert np.allclose(fig["data"][1]["x"], result.study["recommended"]["weights"])
    with pytest.raises(ValueError, match="shape"):
        study_weights_figure(["a", "b"], {"natural": [1.0]})


def test_delta_heatmap_greys_cells_within_the_noise():
    delta = [[-0.30, 0.01, None], [0.05, -0.02, 0.40]]
    sigma = [0.05, 0.05, 0.1]
    fig = bpb_delta_heatmap(delta, ["uniform", "recommended"], ["a", "b", "c"], sigma).to_dict()
    weak, strong = fig["data"]
    assert weak["z"] == [[None, 0.0, None], [0.0, 0.0, None]]
    assert strong["z"] == [[-0.30, None, None], [None, None, 0.40]]
    assert strong["zmid"] == 0.0 and strong["zmax"] == pytest.approx(0.40)
    assert weak["text"][0][0] == "-0.300" and weak["text"][0][2] == ""
    no_sigma = bpb_delta_heatmap(delta, ["u", "r"], ["a", "b", "c"]).to_dict()
    assert no_sigma["data"][1]["z"][0][:2] == [-0.30, 0.01]


def test_delta_heatmap_of_a_study(finished_study):
    _, _, result = finished_study
    table = delta_table(result.study)
    assert "natural" not in table["mixtures"] and "recommended-mean" in table["mixtures"]
    natural = next(p for p in result.study["proxies"] if p["name"] == "anchor-natural-s0")
    uniform = next(p for p in result.study["proxies"] if p["name"] == "anchor-uniform-s0")
    row = table["mixtures"].index("uniform")
    assert np.allclose(table["delta"][row], np.subtract(uniform["bpb"], natural["bpb"]))
    fig = bpb_delta_heatmap(table["delta"], table["mixtures"], table["domains"], table["sigma"])
    assert len(fig.to_dict()["data"]) == 2


def test_predicted_measured_figure(finished_study):
    out = finished_study[1]
    regression = json.loads((out / "regression.json").read_text())
    table = prediction_table(regression)
    fig = predicted_measured_figure(
        table["predicted"],
        table["measured"],
        table["names"],
        cv_spearman=table["cv_spearman"],
        model=table["model"],
        recommended=(1.0, 1.1),
    ).to_dict()
    diagonal, points, star = fig["data"]
    assert diagonal["x"] == diagonal["y"]
    assert np.allclose(points["x"], table["predicted"]) and np.allclose(
        points["y"], table["measured"]
    )
    assert star["name"] == "recommended"
    assert f"{table['cv_spearman']:.2f}" in fig["layout"]["title"]["text"]
    with pytest.raises(ValueError, match="one entry per proxy"):
        predicted_measured_figure([1.0], [1.0, 2.0], ["a"])
