"""Tests for gem_app.evaluate.compare against scikit-learn, pandas and brute force."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from gem_app.evaluate.compare import MISSING, compare_labels


def _sklearn_metrics(human, clusters):
    h, c, v = metrics.homogeneity_completeness_v_measure(human, clusters)
    return {
        "nmi": metrics.normalized_mutual_info_score(human, clusters),
        "ami": metrics.adjusted_mutual_info_score(human, clusters),
        "ari": metrics.adjusted_rand_score(human, clusters),
        "homogeneity": h,
        "completeness": c,
        "v_measure": v,
    }


def _assert_metrics_match(result, human, clusters):
    for name, expected in _sklearn_metrics(human, clusters).items():
        assert abs(getattr(result, name) - expected) <= 1e-9, name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_sklearn_and_table_sums_to_n(seed):
    rng = np.random.default_rng(seed)
    n = 300
    human = rng.choice(["news", "code", "law", "forum", "wiki"], size=n)
    clusters = rng.integers(0, 7, size=n)
    result = compare_labels(clusters, human)
    _assert_metrics_match(result, human, clusters)
    assert result.table.to_numpy().sum() == n
    expected = pd.crosstab(pd.Series(human, name="category"), pd.Series(clusters, name="cluster"))
    pd.testing.assert_frame_equal(result.table, expected, check_dtype=False, check_names=False)


def test_purity_and_inverse_purity_by_hand():
    # categories x clusters:  a: [3, 1]   b: [0, 2]   c: [1, 1]
    human = ["a"] * 4 + ["b"] * 2 + ["c"] * 2
    clusters = [0, 0, 0, 1, 1, 1, 0, 1]
    result = compare_labels(clusters, human)
    np.testing.assert_array_equal(result.table.to_numpy(), [[3, 1], [0, 2], [1, 1]])
    assert result.purity == pytest.approx((3 + 2) / 8)  # column maxima
    assert result.inverse_purity == pytest.approx((3 + 2 + 1) / 8)  # row maxima


def test_weighted_table_is_groupby_sum_and_metrics_stay_per_document():
    rng = np.random.default_rng(5)
    human = rng.choice(["x", "y", "z"], size=100)
    clusters = rng.integers(0, 4, size=100)
    weights = rng.integers(10, 1000, size=100).astype(float)
    result = compare_labels(clusters, human, weights=weights)
    expected = pd.DataFrame({"category": human, "cluster": clusters, "w": weights}).pivot_table(
        index="category", columns="cluster", values="w", aggfunc="sum", fill_value=0
    )
    np.testing.assert_allclose(result.table.to_numpy(), expected.to_numpy())
    assert result.table.to_numpy().sum() == pytest.approx(weights.sum())
    _assert_metrics_match(result, human, clusters)
    assert result.weighted and result.n_documents == 100


def test_missing_values_are_their_own_category():
    human = ["a", None, "b", np.nan, "", "a", pd.NA, "b", "  "]
    clusters = [0, 1, 1, 1, 1, 0, 2, 1, 2]
    result = compare_labels(clusters, human)
    assert list(result.table.index) == ["a", "b", MISSING]
    assert result.table.loc[MISSING].sum() == 5
    filled = ["a", MISSING, "b", MISSING, MISSING, "a", MISSING, "b", MISSING]
    _assert_metrics_match(result, filled, clusters)


@pytest.mark.parametrize(
    "human, clusters",
    [
        (["only"] * 6, [0, 1, 2, 0, 1, 2]),  # a single human category
        (["a", "b", "c", "a", "b", "c"], [0] * 6),  # K = 1
        (["only"] * 6, [3] * 6),  # both
    ],
)
def test_degenerate_cases_follow_sklearn(human, clusters):
    result = compare_labels(clusters, human)
    _assert_metrics_match(result, human, clusters)
    assert result.table.to_numpy().sum() == 6
    json.dumps(result.to_dict())


def test_hungarian_alignment_is_the_best_one_to_one_matching():
    rng = np.random.default_rng(3)
    human = rng.choice(list("abc"), size=80)
    clusters = rng.integers(0, 4, size=80)  # rectangular: 3 categories x 4 clusters
    result = compare_labels(clusters, human)
    values = result.table.to_numpy()
    best = max(
        sum(values[r, c] for r, c in zip(range(3), perm, strict=True))
        for perm in itertools.permutations(range(4), 3)
    )
    assert result.alignment["mass"].sum() == best
    assert result.aligned_accuracy == pytest.approx(best / 80)
    diagonal = np.diag(result.aligned_table.to_numpy())
    np.testing.assert_array_equal(diagonal, result.alignment["mass"].to_numpy())
    # the aligned table is the same table, reordered
    pd.testing.assert_frame_equal(
        result.aligned_table.sort_index().sort_index(axis=1), result.table
    )
    assert len(result.alignment) == 3


def test_misalignment_report_finds_split_categories_and_mixed_clusters():
    # category "a" spread 40/30/30 over clusters 0, 1, 2; "b" clean in cluster 3;
    # cluster 4 mixes c (4), d (3), e (3).
    human = ["a"] * 10 + ["b"] * 10 + ["c"] * 4 + ["d"] * 3 + ["e"] * 3
    clusters = [0] * 4 + [1] * 3 + [2] * 3 + [3] * 10 + [4] * 10
    result = compare_labels(clusters, human)
    assert [d["category"] for d in result.split_categories] == ["a"]
    split = result.split_categories[0]
    assert split["top_share"] == pytest.approx(0.4)
    assert split["clusters"] == [
        {"cluster": 0, "share": pytest.approx(0.4)},
        {"cluster": 1, "share": pytest.approx(0.3)},
        {"cluster": 2, "share": pytest.approx(0.3)},
    ]
    assert [d["cluster"] for d in result.mixed_clusters] == [4]
    assert [c["category"] for c in result.mixed_clusters[0]["categories"]] == ["c", "d", "e"]
    assert result.mixed_clusters[0]["top_share"] == pytest.approx(0.4)
    # clusters 0..2 are pure (all "a"), so they are not mixed
    assert result.purity == pytest.approx((4 + 3 + 3 + 10 + 4) / 30)


def test_soft_assignments_are_reduced_by_argmax():
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(3), size=50)
    human = rng.choice(["p", "q"], size=50)
    result = compare_labels(q, human)
    _assert_metrics_match(result, human, q.argmax(axis=1))


def test_to_dict_is_json_ready():
    result = compare_labels(np.array([0, 0, 1, 1, 2]), ["a", "a", "b", None, "b"])
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["n_documents"] == 5
    assert payload["table"]["categories"] == ["a", "b", MISSING]
    assert payload["table"]["clusters"] == [0, 1, 2]
    assert sum(map(sum, payload["table"]["values"])) == 5
    assert payload["metrics"]["ari"] == pytest.approx(result.ari)


@pytest.mark.parametrize(
    "clusters, human, kwargs, match",
    [
        ([0, 1, 2], ["a", "b"], {}, "clusters has 3 rows but the human column has 2"),
        ([0, 1.5], ["a", "b"], {}, r"clusters\[1\] = 1.5"),
        ([0, np.nan], ["a", "b"], {}, r"clusters\[1\]"),
        (["x", "y"], ["a", "b"], {}, "must be integers"),
        ([0, 1], ["a", "b"], {"weights": [1.0, -1.0]}, r"weights\[1\]"),
        ([0, 1], ["a", "b"], {"weights": [1.0]}, "weights has shape"),
        ([0, 1], ["a", "b"], {"threshold": 0.0}, "threshold"),
        ([], [], {}, "0 documents"),
    ],
)
def test_bad_inputs(clusters, human, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare_labels(clusters, human, **kwargs)


def test_information_metrics_from_the_table_by_hand():
    """Independent of sklearn: entropies of the contingency table (scipy.stats.entropy)."""
    from scipy.stats import entropy

    rng = np.random.default_rng(9)
    human = rng.choice(list("abcd"), size=200)
    clusters = rng.integers(0, 5, size=200)
    result = compare_labels(clusters, human)
    joint = result.table.to_numpy(dtype=float) / 200
    h_c, h_k = entropy(joint.sum(axis=1)), entropy(joint.sum(axis=0))
    mi = h_c + h_k - entropy(joint.ravel())
    assert result.nmi == pytest.approx(2 * mi / (h_c + h_k), abs=1e-12)
    assert result.homogeneity == pytest.approx(mi / h_c, abs=1e-12)
    assert result.completeness == pytest.approx(mi / h_k, abs=1e-12)
