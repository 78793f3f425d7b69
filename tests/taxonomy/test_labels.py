"""Tests for gem_app.taxonomy.labels: vocabulary, term choice, representative documents."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from gem_app.taxonomy.labels import cluster_labels, representative_documents, select_terms
from gem_app.taxonomy.vocabulary import build_vocabulary

POOLS = [
    ["violin", "orchestra", "sonata", "concerto", "cello", "symphony"],
    ["glacier", "tundra", "permafrost", "iceberg", "fjord", "avalanche"],
    ["compiler", "bytecode", "pointer", "recursion", "debugger", "kernel"],
]
COMMON = ["today", "people", "place", "time", "things", "world"]


def _planted_corpus(seed=0, n_per=20):
    rng = np.random.default_rng(seed)
    texts, truth = [], []
    for k, pool in enumerate(POOLS):
        for _ in range(n_per):
            words = list(rng.choice(pool, size=12)) + list(rng.choice(COMMON, size=4))
            rng.shuffle(words)
            texts.append(" ".join(words))
            truth.append(k)
    truth = np.array(truth)
    q = rng.dirichlet(np.full(len(POOLS), 0.3), size=len(truth)) * 0.2
    q[np.arange(len(truth)), truth] += 0.8
    return texts, truth, q


# ----------------------------------------------------------------------------- vocabulary


def test_vocabulary_is_binary_unigrams_and_bigrams_without_stop_words():
    texts = ["the violin and the cello", "violin violin sonata", "the cello sonata"]
    presence, terms, note = build_vocabulary(texts, min_df=1, max_df=1.0)
    assert note == ""
    assert "the" not in terms and "and" not in terms
    assert {"violin", "cello", "sonata", "violin cello", "cello sonata"} <= set(terms)
    assert set(np.unique(presence.toarray())) <= {0.0, 1.0}
    column = list(terms).index("violin")
    np.testing.assert_array_equal(presence[:, column].toarray().ravel(), [1, 1, 0])


@pytest.mark.parametrize(
    "texts, kwargs",
    [
        (["the and of", "is it the", "", "we are"], {"min_df": 1}),  # only stop words
        (["violin cello", "glacier tundra", "compiler kernel"], {"min_df": 2}),  # all pruned
        (["violin cello"], {"min_df": 2}),  # corpus smaller than min_df
    ],
)
def test_empty_vocabulary_gives_cluster_k_labels(texts, kwargs):
    q = np.full((len(texts), 2), 0.5)
    q[0] = [0.9, 0.1]
    result = cluster_labels(texts, q, **kwargs)
    assert result.vocabulary_size == 0
    assert "empty vocabulary" in result.note
    assert [c.label for c in result] == ["cluster 0", "cluster 1"]
    assert all(c.terms == [] for c in result)
    json.dumps(result.to_dict())


def test_texts_empty_after_stop_words_among_good_ones():
    texts, truth, q = _planted_corpus(seed=1)
    texts[0] = "the and of it"
    texts[25] = ""
    result = cluster_labels(texts, q, n_terms=6)
    assert set(result[0].terms) == set(POOLS[0])


@pytest.mark.parametrize("weighted", [False, True])
def test_planted_corpus_labels_contain_pool_words(weighted):
    texts, truth, q = _planted_corpus()
    weights = np.array([len(t.split()) for t in texts], float) if weighted else None
    result = cluster_labels(texts, q, weights=weights, n_terms=6)
    for k, pool in enumerate(POOLS):
        assert set(result[k].terms) == set(pool)
        assert result[k].label == ", ".join(result[k].terms[:3])
        assert result[k].gis_label == result[k].label and result[k].source == "gis"
        assert all(s > 0 for s in result[k].term_scores)
        assert result[k].term_scores == sorted(result[k].term_scores, reverse=True)
        assert len(result[k].documents) == 3
        assert all(truth[d["row"]] == k for d in result[k].documents)
    json.dumps(result.to_dict())


def test_single_cluster_has_no_informative_terms():
    texts, _, _ = _planted_corpus()
    result = cluster_labels(texts, np.ones((len(texts), 1)))
    assert len(result) == 1 and result[0].label == "cluster 0" and result[0].terms == []
    assert result.vocabulary_size > 0 and len(result[0].documents) == 3


# ----------------------------------------------------------------------------- term choice


def test_near_duplicates_are_removed():
    terms = np.array(["network", "networks", "neural network", "graph", "graph theory"])
    scores = np.array([3.0, 2.5, 2.0, 1.0, 0.5])
    presence = sp.csr_matrix(np.eye(5))
    chosen = select_terms(scores, terms, presence, n_terms=5, diversity=0.0)
    assert [terms[i] for i in chosen] == ["network", "graph"]


def test_mmr_demotes_a_term_that_always_co_occurs():
    terms = np.array(["alpha", "bravo", "charlie", "delta"])
    scores = np.array([1.0, 0.9, 0.5, -0.2])  # delta has G < 0: never chosen
    presence = np.zeros((6, 4))
    presence[:3, 0] = presence[:3, 1] = 1  # alpha and bravo always together
    presence[3:, 2] = 1
    presence[:, 3] = 1
    presence = sp.csr_matrix(presence)
    plain = select_terms(scores, terms, presence, n_terms=4, diversity=0.0)
    diverse = select_terms(scores, terms, presence, n_terms=4, diversity=0.5)
    assert [terms[i] for i in plain] == ["alpha", "bravo", "charlie"]
    # bravo: 0.5*0.9 - 0.5*1 = -0.05 < charlie: 0.5*0.5 - 0.5*0 = 0.25
    assert [terms[i] for i in diverse] == ["alpha", "charlie", "bravo"]


# ----------------------------------------------------------------------------- documents


def test_representative_documents_match_brute_force():
    rng = np.random.default_rng(2)
    n, k, d = 50, 4, 5
    q = rng.dirichlet(np.ones(k), size=n)
    x = rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    mu = rng.normal(size=(k, d))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    score = q * (x @ mu.T)
    expected = np.argsort(-score, axis=0)[:3].T
    rows, scores = representative_documents(q, x, mu, chunk_size=7)
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(score.T, expected, axis=1))
    order = rng.permutation(n)
    chunks = [(order[i : i + 9], q[order[i : i + 9]]) for i in range(0, n, 9)]
    np.testing.assert_array_equal(representative_documents(chunks, x, mu)[0], expected)
    by_q, _ = representative_documents(q, None, None, n_docs=2)
    np.testing.assert_array_equal(by_q, np.argsort(-q, axis=0)[:2].T)


def test_representative_documents_fewer_rows_than_requested():
    rows, _ = representative_documents(np.array([[0.2, 0.8], [0.6, 0.4]]), None, None, n_docs=3)
    np.testing.assert_array_equal(rows, [[1, 0], [0, 1]])


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs():
    texts, _, q = _planted_corpus()
    with pytest.raises(ValueError, match="text at row 2 is NoneType"):
        cluster_labels(texts[:2] + [None] + texts[3:], q)
    with pytest.raises(ValueError, match="q has 60 rows but there are 59 texts"):
        cluster_labels(texts[:59], q)
    with pytest.raises(ValueError, match="diversity"):
        cluster_labels(texts, q, diversity=1.5)
    with pytest.raises(ValueError, match="min_df"):
        cluster_labels(texts, q, min_df=0)
    with pytest.raises(ValueError, match="one-shot iterator"):
        cluster_labels(texts, iter([(slice(0, 60), q)]))
    with pytest.raises(ValueError, match="both points and mean_directions"):
        representative_documents(q, np.ones((60, 2)), None)
