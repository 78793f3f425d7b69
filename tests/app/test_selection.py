"""Selection events, breakdowns and cluster adjustments (gem_app.app.selection)."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from gem_app.app.selection import (
    ClusterAdjustments,
    adjust_editor,
    domain_adjustments,
    selected_rows,
    selection_breakdown,
)


def test_selected_rows_reads_customdata_and_skips_other_traces():
    event = {
        "selection": {
            "points": [
                {"customdata": [7, 1]},
                {"customdata": [3, 0]},
                {"customdata": [7, 1]},
                {"x": 0.0, "y": 1.0},  # a label or a search star: no customdata
            ]
        }
    }
    np.testing.assert_array_equal(selected_rows(event), [3, 7])
    assert selected_rows(None).size == 0 and selected_rows({"selection": {}}).size == 0


def test_selection_breakdown_counts_clusters_and_categories():
    clusters = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    human = np.array(list("aabbbccca"))
    by_cluster, by_category = selection_breakdown([0, 2, 3, 5, 8], clusters, human, 4)
    assert by_cluster["cluster"].tolist() == [1, 2, 0]
    assert by_cluster["selected"].tolist() == [2, 2, 1]
    assert by_cluster["cluster_size"].tolist() == [3, 4, 2]
    np.testing.assert_allclose(by_cluster["share_of_cluster"], [2 / 3, 0.5, 0.5])
    assert dict(zip(by_category["category"], by_category["selected"], strict=True)) == {
        "a": 2,
        "b": 2,
        "c": 1,
    }
    assert by_category["share"].sum() == pytest.approx(1.0)


def test_adjustments_accumulate_and_replace():
    adj = ClusterAdjustments("fit").excluding([1, 2]).boosting([2, 3], 2.5)
    assert adj.excluded == {1} and adj.boosted == {2: 2.5, 3: 2.5}
    adj = adj.excluding([3])
    assert adj.excluded == {1, 3} and adj.boosted == {2: 2.5}
    assert adj.summary == "excluded clusters 1, 3; boosted 2 ×2.5"
    with pytest.raises(ValueError, match="boost factor"):
        adj.boosting([1], 0.0)


def _domains(ids, document_domain):
    return SimpleNamespace(ids=ids, document_domain=np.asarray(document_domain))


def test_domain_adjustments_follow_the_majority_of_tokens():
    # leaves: "0.a" and "0.b" split cluster 0; "m" merges clusters 1 (3 tokens) and 2 (1 token)
    clusters = np.array([0, 0, 1, 2])
    domains = _domains(["0.a", "0.b", "m"], [0, 1, 2, 2])
    tokens = np.array([1.0, 1.0, 3.0, 1.0])
    exclude, boost = domain_adjustments(
        ClusterAdjustments("f", frozenset({0})), domains, clusters, tokens
    )
    assert exclude == ["0.a", "0.b"] and boost == {}
    exclude, boost = domain_adjustments(
        ClusterAdjustments("f", frozenset({2}), {1: 4.0}), domains, clusters, tokens
    )
    assert exclude == [] and boost == {"m": 4.0}  # cluster 2 holds 1/4 of m: not excluded
    exclude, _ = domain_adjustments(
        ClusterAdjustments("f", frozenset({1, 2})), domains, clusters, tokens
    )
    assert exclude == ["m"]


def test_adjust_editor_only_for_its_fit():
    frame = pd.DataFrame(
        {"domain": ["0", "1", "2"], "multiplier": [1.0, 1.0, 1.0], "exclude": [False] * 3}
    )
    domains = _domains(["0", "1", "2"], [0, 1, 2])
    adj = ClusterAdjustments("f").excluding([0]).boosting([2], 3.0)
    out = adjust_editor(frame, adj, "f", domains, np.array([0, 1, 2]), np.ones(3))
    assert out["exclude"].tolist() == [True, False, False]
    assert out["multiplier"].tolist() == [1.0, 1.0, 3.0]
    assert frame["exclude"].tolist() == [False] * 3  # a copy
    assert adjust_editor(frame, adj, "other", domains, np.array([0, 1, 2]), np.ones(3)) is frame
    assert adjust_editor(frame, None, "f", domains, np.array([0, 1, 2]), np.ones(3)) is frame
