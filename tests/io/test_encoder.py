"""Tests for gem_app.io.encoder: cache logic with a fake encoder, progress, unit rows, real MiniLM."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from gem_app.io import encoder as embed
from gem_app.io.encoder import embed_texts, load_encoder


class CountingEncoder:
    """Deterministic fake: a text's vector comes from the sha1 of the text; counts encoded texts."""

    def __init__(self, dim: int = 8):
        self.dim = dim
        self.encoded: list[str] = []
        self.calls: list[int] = []

    def encode(self, texts, batch_size=32, **kwargs):
        self.encoded.extend(texts)
        self.calls.append(len(texts))
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).normal(size=self.dim) * 3.0)
        return np.asarray(rows)


def expected_unit(text: str, dim: int = 8) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).normal(size=dim) * 3.0
    return v / np.sqrt(np.sum(v * v))


TEXTS = [f"document number {i}" for i in range(10)]


def test_unit_norm_and_values_match_independent_normalisation():
    enc = CountingEncoder()
    out = embed_texts(TEXTS, encoder=enc, batch_size=3)
    assert out.dtype == np.float32 and out.shape == (10, 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    ref = np.stack([expected_unit(t) for t in TEXTS])
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert enc.calls == [3, 3, 3, 1]


def test_second_call_encodes_nothing_and_returns_identical_result(tmp_path):
    enc = CountingEncoder()
    first = embed_texts(TEXTS, encoder=enc, cache_dir=tmp_path, batch_size=4)
    assert sorted(enc.encoded) == sorted(TEXTS)
    enc2 = CountingEncoder()
    second = embed_texts(TEXTS, encoder=enc2, cache_dir=tmp_path, batch_size=4)
    assert enc2.encoded == []
    np.testing.assert_array_equal(first, second)


def test_partly_new_list_encodes_only_new_texts(tmp_path):
    embed_texts(TEXTS[:6], encoder=CountingEncoder(), cache_dir=tmp_path)
    enc = CountingEncoder()
    mixed = [TEXTS[8], TEXTS[2], TEXTS[9], TEXTS[0], TEXTS[8]]
    out = embed_texts(mixed, encoder=enc, cache_dir=tmp_path, batch_size=2)
    assert sorted(enc.encoded) == sorted([TEXTS[8], TEXTS[9]])  # the repeat is encoded once
    uncached = embed_texts(mixed, encoder=CountingEncoder())
    np.testing.assert_array_equal(out, uncached)
    np.testing.assert_array_equal(out[0], out[4])


def test_cache_is_keyed_by_model_name(tmp_path):
    embed_texts(TEXTS[:3], encoder=CountingEncoder(), model_name="model-a", cache_dir=tmp_path)
    enc = CountingEncoder()
    embed_texts(TEXTS[:3], encoder=enc, model_name="model-b", cache_dir=tmp_path)
    assert sorted(enc.encoded) == sorted(TEXTS[:3])


def test_cache_files_are_plain_npy_and_load_without_pickle(tmp_path):
    embed_texts(TEXTS, encoder=CountingEncoder(), cache_dir=tmp_path, model_name="m")
    keys_files = list(tmp_path.rglob("*.keys.npy"))
    vec_files = list(tmp_path.rglob("*.vectors.npy"))
    assert len(keys_files) == 1 and len(vec_files) == 1
    keys = np.load(keys_files[0], allow_pickle=False)
    vectors = np.load(vec_files[0], allow_pickle=False)
    assert keys.shape == (10, 32) and keys.dtype == np.uint8 and vectors.shape == (10, 8)
    expected = {hashlib.sha256(b"m\0" + t.encode()).digest() for t in TEXTS}
    assert {row.tobytes() for row in keys} == expected
    assert not list(tmp_path.rglob("*.tmp"))


def test_incomplete_shard_without_keys_is_ignored(tmp_path):
    embed_texts(TEXTS[:4], encoder=CountingEncoder(), cache_dir=tmp_path)
    for keys_file in tmp_path.rglob("*.keys.npy"):
        keys_file.unlink()  # as if the process died between the two writes
    enc = CountingEncoder()
    embed_texts(TEXTS[:4], encoder=enc, cache_dir=tmp_path)
    assert sorted(enc.encoded) == sorted(TEXTS[:4])


def test_large_runs_flush_shards_and_small_shards_get_merged(tmp_path, monkeypatch):
    monkeypatch.setattr(embed, "_FLUSH_EVERY", 4)
    monkeypatch.setattr(embed, "_MAX_SHARDS", 2)
    embed_texts(TEXTS, encoder=CountingEncoder(), cache_dir=tmp_path, batch_size=2)
    assert len(list(tmp_path.rglob("*.keys.npy"))) == 3  # 4 + 4 + 2 texts
    for i in range(2):  # two more one-text shards -> 5 shards, 3 of them small
        embed_texts([f"extra {i}"], encoder=CountingEncoder(), cache_dir=tmp_path)
    enc = CountingEncoder()
    everything = [*TEXTS, "extra 0", "extra 1"]
    out = embed_texts(everything, encoder=enc, cache_dir=tmp_path)  # triggers the merge
    assert enc.encoded == []
    assert len(list(tmp_path.rglob("*.keys.npy"))) == 3  # two full shards + the merged one
    again = CountingEncoder()
    np.testing.assert_array_equal(embed_texts(everything, encoder=again, cache_dir=tmp_path), out)
    assert again.encoded == []


def test_progress_called_after_every_batch(tmp_path):
    calls = []
    embed_texts(
        TEXTS, encoder=CountingEncoder(), batch_size=4, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(4, 10), (8, 10), (10, 10)]

    calls.clear()
    embed_texts(TEXTS[:5], encoder=CountingEncoder(), cache_dir=tmp_path)
    embed_texts(
        TEXTS,
        encoder=CountingEncoder(),
        cache_dir=tmp_path,
        batch_size=2,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(7, 10), (9, 10), (10, 10)]  # 5 cached, then 2 + 2 + 1 encoded

    calls.clear()
    embed_texts(
        TEXTS,
        encoder=CountingEncoder(),
        cache_dir=tmp_path,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(10, 10)]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="text at row 1 is int"):
        embed_texts(["ok", 3], encoder=CountingEncoder())
    with pytest.raises(ValueError, match="batch_size"):
        embed_texts(["ok"], encoder=CountingEncoder(), batch_size=0)

    class ZeroEncoder:
        def encode(self, texts, batch_size=32):
            return np.zeros((len(texts), 4))

    with pytest.raises(ValueError, match="zero or non-finite"):
        embed_texts(["a"], encoder=ZeroEncoder())


def test_unknown_model_lists_offline_models():
    with pytest.raises(ValueError, match="all-MiniLM-L6-v2"):
        load_encoder("no-such-model")
    with pytest.raises(ValueError, match="available offline"):
        embed_texts(["a"], model_name="no-such-model")


def test_empty_input_returns_empty_matrix():
    out = embed_texts([], encoder=CountingEncoder())
    assert out.shape[0] == 0 and out.dtype == np.float32


def test_real_minilm_similar_texts_are_closer():
    texts = [
        "The cat sat on the mat.",
        "A kitten is sitting on a rug.",
        "Quarterly revenue grew by eight percent.",
        "The central bank raised interest rates.",
    ]
    out = embed_texts(texts, device="cpu")
    assert out.shape == (4, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    sim = out @ out.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[0, 3]
    assert sim[2, 3] > sim[2, 0] and sim[2, 3] > sim[2, 1]
