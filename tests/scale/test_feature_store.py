"""The student's feature store: on disk and in memory give the same features and student;
its scratch folder is removed however the fit ends; bad options are clear ValueErrors."""

from __future__ import annotations

import stat

import numpy as np
import pytest
import torch
from scipy import sparse

from gem_app.cli import distill_cmd, main
from gem_app.scale import feature_store, student
from gem_app.scale.feature_store import (
    AUTO_DISK_ROWS,
    FeatureStore,
    centred_unit,
    resolve_store,
)
from gem_app.scale.hashing import hash_features, inverse_document_frequency, tfidf_weights
from gem_app.scale.student import Student
from gem_app.scale.student_net import StaticVectors
from tests.scale.test_distill import topic_texts


@pytest.fixture()
def small_chunks(monkeypatch):
    """Chunks of 7 texts: every fit below streams through many chunks."""
    monkeypatch.setattr(feature_store, "CHUNK_ROWS", 7)


def featurise(texts):
    return hash_features(texts, n_buckets=2**10)


def texts_with_empty_ones(n=40, seed=0):
    texts, q, _ = topic_texts(n, seed)
    texts[3] = texts[17] = ""  # rows without any n-gram
    return texts, q


# ----------------------------------------------------------------------------- features
def test_both_stores_equal_the_whole_matrix_formula(small_chunks):
    texts, _ = texts_with_empty_ones()
    counts = featurise(texts)
    idf = inverse_document_frequency(counts)
    expected = tfidf_weights(counts, idf)  # the whole-matrix path, independent of the store
    with FeatureStore("memory") as memory, FeatureStore("disk") as disk:
        for weights, static, got_idf, mean in (
            memory.build(texts, featurise),
            disk.build(texts, featurise),
        ):
            assert static is None and mean is None
            np.testing.assert_array_equal(got_idf, idf)
            got = weights[np.arange(len(texts))]
            assert got.dtype == np.float32 and got.shape == expected.shape
            np.testing.assert_array_equal(got.toarray(), expected.toarray())
    with pytest.raises(ValueError, match="the feature store is closed"):
        weights[np.arange(3)]  # the disk one: its files are gone with the block


def test_disk_rows_any_order_repeats_and_bounds(small_chunks):
    texts, _ = texts_with_empty_ones()
    with FeatureStore("memory") as memory, FeatureStore("disk") as disk:
        X = memory.build(texts, featurise)[0]
        D = disk.build(texts, featurise)[0]
        for rows in ([5, 3, 4, 17, 17, 39, 0], [], list(range(40)), [10, 11, 12, 30, 31]):
            got, want = D[np.array(rows, dtype=int)], X[np.array(rows, dtype=int)]
            assert got.shape == want.shape == (len(rows), 2**10)
            np.testing.assert_array_equal(got.toarray(), want.toarray())
        with pytest.raises(IndexError, match="row 40 is out of range for 40 rows"):
            D[np.array([1, 40])]
        with pytest.raises(IndexError, match="row -1 is out of range"):
            D[np.array([-1])]


def test_static_vectors_stored_centred_and_equal_both_ways(small_chunks):
    texts, _ = texts_with_empty_ones(30, 1)
    model = StaticVectors.from_minilm()[0]
    raw = model(texts).numpy().astype(np.float64)
    with FeatureStore("memory") as memory, FeatureStore("disk") as disk:
        _, S_mem, _, mean_mem = memory.build(texts, featurise, model)
        _, S_disk, _, mean_disk = disk.build(texts, featurise, model)
        rows = np.arange(len(texts))
        np.testing.assert_array_equal(S_disk[rows], S_mem)
        assert S_disk.shape == S_mem.shape == (30, raw.shape[1])
        some = np.array([5, 3, 3, 29, 0, 1, 2])  # any order, repeats, runs
        np.testing.assert_array_equal(S_disk[some], S_mem[some])
        assert S_disk[np.array([], dtype=int)].shape == (0, raw.shape[1])
        with pytest.raises(IndexError, match="row 30 is out of range for 30 rows"):
            S_disk[np.array([0, 30])]
    np.testing.assert_array_equal(mean_disk, mean_mem)
    np.testing.assert_allclose(mean_mem, raw.mean(0), rtol=1e-6, atol=1e-7)
    centred = raw - raw.mean(0)
    expected = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    np.testing.assert_allclose(S_mem, expected, rtol=1e-5, atol=1e-6)


def test_centred_unit_keeps_a_zero_row_zero():
    v = centred_unit(np.array([[3.0, 4.0], [1.0, 1.0]]), np.array([0.0, 0.0]))
    np.testing.assert_allclose(v, [[0.6, 0.8], [2**-0.5, 2**-0.5]], rtol=1e-6)
    assert v.dtype == np.float32
    np.testing.assert_array_equal(centred_unit(np.ones((1, 2)), np.ones(2)), [[0.0, 0.0]])


# ----------------------------------------------------------------------------- the student
def fit_both(**params):
    texts, q, _ = topic_texts(150, 4)
    kw = dict(n_buckets=2**10, epochs=3, batch_size=32, random_state=5, **params)
    a = Student(feature_store="memory", **kw).fit(texts, q)
    b = Student(feature_store="disk", **kw).fit(texts, q)
    return a, b, texts


@pytest.mark.parametrize(
    "params",
    [dict(hidden=0, static_vectors=True), dict(hidden=8, static_vectors=True, learning_rate=3e-3)],
)
def test_disk_and_memory_train_bit_identical_students(small_chunks, params):
    a, b, texts = fit_both(**params)
    state_a, state_b = a.net_.state_dict(), b.net_.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:  # equal, not merely close: the same bytes in the same order
        assert torch.equal(state_a[key], state_b[key]), key
    np.testing.assert_array_equal(a.idf_, b.idf_)
    np.testing.assert_array_equal(a.static_mean_, b.static_mean_)
    assert a.history_ == b.history_ and a.threshold_ == b.threshold_
    np.testing.assert_array_equal(a.predict_proba(texts), b.predict_proba(texts))


def test_auto_store_switches_at_the_row_limit():
    assert resolve_store("auto", AUTO_DISK_ROWS) == "memory"
    assert resolve_store("auto", AUTO_DISK_ROWS + 1) == "disk"
    assert resolve_store("memory", 10**7) == "memory"
    assert resolve_store("disk", 10) == "disk"
    with pytest.raises(ValueError, match=r"feature_store must be one of .* got 'ssd'"):
        resolve_store("ssd", 10)


# ----------------------------------------------------------------------------- clean-up
def spy_on_training(monkeypatch, scratch, seen, error=None):
    """Record the scratch folder while the student trains; then raise ``error`` if given."""
    real = student.train_linear

    def train_linear(*args, **kwargs):
        folders = list(scratch.iterdir())
        seen.append(
            (
                [f.name for f in folders],
                [stat.S_IMODE(f.stat().st_mode) for f in folders],
                sorted(p.name for p in folders[0].iterdir()) if folders else [],
            )
        )
        if error is not None:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(student, "train_linear", train_linear)


def test_scratch_folder_is_private_and_removed_after_fit(tmp_path, monkeypatch):
    seen = []
    spy_on_training(monkeypatch, tmp_path, seen)
    texts, q, _ = topic_texts(40, 0)
    Student(
        n_buckets=2**10, epochs=1, feature_store="disk", scratch_dir=tmp_path, random_state=0
    ).fit(texts, q)
    names, modes, files = seen[0]
    assert len(names) == 1 and names[0].startswith("gem-student-") and modes == [0o700]
    assert files == ["data.float32", "indices.int32", "static.float32"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_scratch_folder_is_removed_when_the_fit_fails(tmp_path, monkeypatch, error):
    seen = []
    spy_on_training(monkeypatch, tmp_path, seen, error)
    texts, q, _ = topic_texts(40, 0)
    kw = dict(static_vectors=False, feature_store="disk", scratch_dir=str(tmp_path))
    with pytest.raises(type(error)):
        Student(n_buckets=2**10, **kw).fit(texts, q)
    assert seen[0][2] == ["data.float32", "indices.int32"]  # it did exist during the fit
    assert list(tmp_path.iterdir()) == []


def test_memory_store_writes_nothing(tmp_path, monkeypatch):
    seen = []
    spy_on_training(monkeypatch, tmp_path, seen, RuntimeError("stop"))
    texts, q, _ = topic_texts(40, 0)
    with pytest.raises(RuntimeError, match="stop"):
        Student(static_vectors=False, feature_store="memory", scratch_dir=tmp_path).fit(texts, q)
    assert seen == [([], [], [])] and list(tmp_path.iterdir()) == []


def test_disk_store_needs_its_with_block():
    with pytest.raises(RuntimeError, match="inside a `with` block"):
        FeatureStore("disk").build(["a b"], featurise)


# ----------------------------------------------------------------------------- bad options
@pytest.mark.parametrize(
    "params, message",
    [
        ({"feature_store": "ssd"}, "'feature_store' parameter of Student must be a str among"),
        ({"feature_store": None}, "'feature_store' parameter of Student must be a str among"),
        ({"scratch_dir": 5}, "'scratch_dir' parameter of Student must be"),
        ({"scratch_dir": "/no/such/folder"}, "scratch_dir '/no/such/folder' is not an existing"),
    ],
)
def test_bad_store_options(params, message):
    texts, q, _ = topic_texts(20, 0)
    with pytest.raises(ValueError, match=message):
        Student(static_vectors=False, **params).fit(texts, q)


def test_bad_store_arguments():
    with pytest.raises(ValueError, match="where must be 'memory' or 'disk', got 'auto'"):
        FeatureStore("auto")
    with pytest.raises(ValueError, match="no texts"):
        FeatureStore("memory").build([], featurise)


def test_cli_passes_the_store_options_and_checks_the_folder_first(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(distill_cmd, "distill_run", lambda *a, **kw: calls.append(kw) or {})
    monkeypatch.setattr(distill_cmd, "summary", lambda m, out: "ok")
    args = ["distill", "RUN", "--out", str(tmp_path / "s"), "--feature-store", "disk"]
    assert main([*args, "--scratch-dir", str(tmp_path)]) == 0
    assert calls[0]["feature_store"] == "disk" and calls[0]["scratch_dir"] == str(tmp_path)
    assert main([*args, "--scratch-dir", str(tmp_path / "none")]) == 2
    assert len(calls) == 1 and "is not an existing folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["distill", "RUN", "--out", str(tmp_path / "s"), "--feature-store", "ssd"])


def test_sparse_rows_are_csr_float32(small_chunks):
    texts, _ = texts_with_empty_ones()
    with FeatureStore("disk") as disk:
        part = disk.build(texts, featurise)[0][np.array([2, 3, 4])]
    assert sparse.isspmatrix_csr(part) and part.dtype == np.float32
    assert part[1].nnz == 0 and part[0].nnz > 0
