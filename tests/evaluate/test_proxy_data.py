"""Tokenizers, the held-out split, token streams, the paired data order and its epoch caps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gem_app.evaluate.proxy import (
    ProxyTokenizer,
    WindowReader,
    balanced_plan,
    bits_per_byte,
    build_heldout,
    build_streams,
    domain_caps,
    heldout_split,
    mixture_plan,
    train_tokenizer,
    window_counts,
)

TEXTS = [
    "Debian packages: naïve café — 12 libraries\n\tand tabs",
    "def f(x):\n    return x ** 2  # 日本語",
    "",
    "plain ascii text, plain ascii text, plain ascii text",
] * 20


@pytest.mark.parametrize("vocab", [0, 300])
def test_tokenizers_are_lossless_and_round_trip_through_json(vocab):
    tok = train_tokenizer(TEXTS, vocab)
    assert tok.kind == ("bytes" if vocab == 0 else "bpe")
    encoded = tok.encode(TEXTS[:4])
    for text, ids in zip(TEXTS[:4], encoded, strict=True):
        assert ids.dtype == np.int32
        assert tok.decode(ids) == text
        assert tok.eos_id not in ids
        assert ids.max(initial=0) < tok.vocab_size
    again = ProxyTokenizer.from_json(tok.to_json())
    assert again.vocab_size == tok.vocab_size and again.eos_id == tok.eos_id
    for a, b in zip(encoded, again.encode(TEXTS[:4]), strict=True):
        assert np.array_equal(a, b)
    if vocab:  # merges compress the training text
        assert sum(e.size for e in encoded) < sum(len(t.encode()) for t in TEXTS[:4])
    else:
        assert encoded[0].size == len(TEXTS[0].encode("utf-8"))


def test_tokenizer_refuses_bad_settings():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(TEXTS, 200)
    with pytest.raises(ValueError, match="no training text"):
        train_tokenizer(["", ""], 300)
    with pytest.raises(ValueError, match="not a proxy tokenizer"):
        ProxyTokenizer.from_json("{}")


def test_heldout_split_is_stratified_capped_and_eligible_only():
    strata = np.repeat([0, 1, 2], [100, 30, 5])
    eligible = np.ones(strata.size, bool)
    eligible[100:110] = False  # stratum 1: 20 eligible of 30
    held = heldout_split(strata, eligible, share=0.2, max_docs=10, random_state=0)
    assert held.sum() == 10 + 6 + 1
    assert np.bincount(strata[held]).tolist() == [10, 6, 1]
    assert not (held & ~eligible).any()
    again = heldout_split(strata, eligible, share=0.2, max_docs=10, random_state=0)
    assert np.array_equal(held, again)
    # a stratum keeps at least one training document
    one = heldout_split(np.zeros(1), np.ones(1, bool), share=0.5, random_state=0)
    assert not one.any()
    with pytest.raises(ValueError, match="share"):
        heldout_split(strata, eligible, share=1.0)


def test_streams_and_heldout_keep_every_token_and_owner():
    tokens = [np.array([1, 2, 3], np.int32), np.array([4], np.int32), np.array([5, 6], np.int32)]
    streams = build_streams(
        tokens,
        np.array([10, 11, 12]),
        np.array([1, 0, 1]),
        2,
        eos_id=9,
        vocab_size=10,
        doc_bytes=np.array([3, 1, 2]),
    )
    assert streams.streams[0].tolist() == [4, 9]
    assert streams.streams[1].tolist() == [1, 2, 3, 9, 5, 6, 9]
    assert streams.owners[1].tolist() == [10, 10, 10, -1, 12, 12, -1]
    assert streams.bytes.tolist() == [1, 5]
    held = build_heldout(tokens[:2], np.array([3, 4]), np.array([3, 1]), eos_id=9)
    assert held.tokens.tolist() == [9, 1, 2, 3, 9, 4, 9]
    assert held.owner.tolist() == [-1, 0, 0, 0, -1, 1, -1]


def test_window_reader_reads_stream_windows_with_wraparound():
    tokens = [np.arange(10, dtype=np.int32), np.arange(100, 103, dtype=np.int32)]
    streams = build_streams(
        tokens, np.arange(2), np.array([0, 1]), 2, eos_id=0, vocab_size=200, doc_bytes=np.ones(2)
    )
    reader = WindowReader(streams, 4, "cpu")
    x, y = reader.read(np.array([0, 0, 1]), np.array([0, 2, 0]))
    full0 = np.append(np.arange(10), 0)
    full1 = np.array([100, 101, 102, 0])
    assert x[0].tolist() == full0[0:4].tolist() and y[0].tolist() == full0[1:5].tolist()
    assert x[1].tolist() == full0[8:11].tolist() + [full0[0]]  # wraps around
    assert x[2].tolist() == full1.tolist() and y[2].tolist() == [101, 102, 0, 100]
    assert window_counts([11, 4, 0, 1], 4).tolist() == [3, 1, 0, 1]


def test_mixture_plan_follows_weights_and_pairs_mixtures():
    lengths = np.array([40_000, 40_000, 40_000])
    kwargs = dict(context=16, batch_size=8, steps=500, max_epochs=None, seed=3)
    dom_a, win_a = mixture_plan(lengths, [0.6, 0.3, 0.1], **kwargs)
    dom_b, win_b = mixture_plan(lengths, [0.3, 0.6, 0.1], **kwargs)
    share = np.bincount(dom_a, minlength=3) / dom_a.size
    assert np.allclose(share, [0.6, 0.3, 0.1], atol=0.03)
    # common random numbers: rows that fall in domain 2 under both mixtures coincide...
    assert np.array_equal(dom_a == 2, dom_b == 2)
    # ...and wherever both mixtures pick the same domain, they read the same window
    same = dom_a == dom_b
    assert same.mean() > 0.6
    assert np.array_equal(win_a[same], win_b[same])
    again = mixture_plan(lengths, [0.6, 0.3, 0.1], **kwargs)
    assert np.array_equal(again[0], dom_a) and np.array_equal(again[1], win_a)


def test_epoch_caps_are_never_exceeded_and_rows_move_to_other_domains():
    lengths = np.array([200, 5_000, 5_000])  # domain 0: 13 windows of 16 tokens
    windows = window_counts(lengths, 16)
    domain, window = mixture_plan(
        lengths, [0.5, 0.25, 0.25], context=16, batch_size=8, steps=100, max_epochs=2.0, seed=0
    )
    used = np.bincount(domain, minlength=3)
    assert used[0] == math.floor(2.0 * windows[0])
    assert used.sum() == 800
    for k in range(3):  # windows are spread over the whole domain
        read = window[domain == k]
        assert read.min() >= 0 and read.max() < windows[k]
        assert np.unique(read).size >= min(read.size, windows[k]) * 0.5
    caps = domain_caps(lengths, context=16, rows=800, max_epochs=2.0)
    assert np.allclose(caps, 2.0 * windows / 800)
    with pytest.raises(ValueError, match="no data"):
        mixture_plan(
            [200, 0], [1.0, 0.0], context=16, batch_size=8, steps=100, max_epochs=1.0, seed=0
        )


def test_balanced_plan_puts_every_domain_in_every_step():
    domain, _ = balanced_plan([100, 200, 300], context=8, rows_per_domain=2, steps=10, seed=0)
    for step in domain.reshape(10, 6):
        assert sorted(step.tolist()) == [0, 0, 1, 1, 2, 2]


def test_bits_per_byte_pools_documents():
    nats = np.array([10.0, 20.0, 30.0])
    size = np.array([5, 10, 20])
    groups = np.array([0, 0, 2])
    out = bits_per_byte(nats, size, groups, 3)
    assert out[0] == pytest.approx(30.0 / math.log(2) / 15)
    assert np.isnan(out[1])
    assert out[2] == pytest.approx(30.0 / math.log(2) / 20)
    assert bits_per_byte(nats, size)[0] == pytest.approx(60 / math.log(2) / 35)
