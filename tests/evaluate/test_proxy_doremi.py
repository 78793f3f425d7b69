"""DoReMi on planted domains: excess losses drive the weights, which stay above eps / K."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gem_app.evaluate.proxy import (
    build_streams,
    domain_mean_losses,
    doremi_weights,
    proxy_config,
    torch_threads,
    train_proxy,
    train_tokenizer,
)
from gem_app.mixing.strategies import doremi_update


@pytest.fixture(scope="module")
def planted_streams():
    """Domain 0: words of a 300-word random vocabulary (much to learn); 1 and 2: short
    repeated patterns (learnt from a few sequences)."""
    rng = np.random.default_rng(0)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    vocab = ["".join(rng.choice(letters, rng.integers(3, 8))) for _ in range(300)]
    texts = []
    for i in range(180):
        k = i % 3
        if k == 0:
            texts.append(" ".join(rng.choice(vocab, 40)))
        elif k == 1:
            texts.append("ab " * 60)
        else:
            texts.append("0123456789 " * 20)
    tok = train_tokenizer(texts, 300)
    return build_streams(
        tok.encode(texts),
        np.arange(180),
        np.arange(180) % 3,
        3,
        eos_id=tok.eos_id,
        vocab_size=tok.vocab_size,
        doc_bytes=np.array([len(t) for t in texts]),
    )


def test_domain_mean_losses():
    loss = torch.tensor([[1.0, 3.0], [5.0, 7.0], [2.0, 2.0]])
    rows = torch.tensor([0, 0, 2])
    assert domain_mean_losses(loss, rows, 3).tolist() == [4.0, 0.0, 2.0]


def test_doremi_upweights_the_highest_excess_loss_and_keeps_weights_above_eps(planted_streams):
    config = proxy_config("ci", steps=60)
    with torch_threads(1):
        reference = train_proxy(
            config,
            planted_streams,
            [0.9, 0.05, 0.05],
            init_seed=1,
            data_seed=1,
            max_epochs=None,
            device="cpu",
        ).model
        result = doremi_weights(
            config, planted_streams, reference, init_seed=1, data_seed=1, device="cpu"
        )
    k, eps = 3, 1e-3
    assert result.history.shape == (60, 3) and result.excess.shape == (60, 3)
    assert np.allclose(result.history.sum(axis=1), 1.0)
    assert result.history.min() >= eps / k - 1e-15
    assert np.allclose(result.weights, result.history.mean(axis=0))
    mean_excess = result.excess.mean(axis=0)
    assert np.argmax(result.weights) == np.argmax(mean_excess)
    assert result.weights[np.argmax(mean_excess)] > 1 / k
    # the reference saw domain 0 most and the patterns are learnt at once: the proxy lags
    # the reference on domain 0, and DoReMi moves the weight there
    assert np.argmax(mean_excess) == 0
    assert result.history[-1, 0] > 0.5


def test_exponentiated_gradient_on_a_constant_excess_concentrates_but_respects_eps():
    w = np.full(4, 0.25)
    for _ in range(200):
        w = doremi_update(w, [0.0, 0.5, 0.1, 0.0], step_size=1.0, smoothing=1e-3)
    assert np.argmax(w) == 1 and w[1] > 0.99
    assert w.min() >= 1e-3 / 4 - 1e-15
