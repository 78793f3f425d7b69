"""The proxy network, its presets, schedule, device and threads."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from gem_app.evaluate.proxy import (
    PRESETS,
    build_model,
    proxy_config,
    resolve_device,
    torch_threads,
)
from gem_app.evaluate.proxy.model import learning_rate


def _model(seed=0, **overrides):
    config = proxy_config("ci", **overrides)
    return config, build_model(config, 300, init_seed=seed, device="cpu")


def test_same_init_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _, a = _model(seed=5)
    after = torch.rand(3)
    _, b = _model(seed=5)
    _, c = _model(seed=6)
    assert torch.equal(expected, after)
    for (name, x), (_, y), (_, z) in zip(
        a.state_dict().items(), b.state_dict().items(), c.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), name
        if x.dim() >= 2:
            assert not torch.equal(x, z), name


def test_logits_are_causal():
    _, model = _model()
    model.eval()
    tokens = torch.randint(0, 300, (2, 20))
    changed = tokens.clone()
    changed[:, 12:] = (changed[:, 12:] + 7) % 300
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-6)
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_output_layer_is_the_tied_embedding():
    config, model = _model()
    names = [n for n, _ in model.named_parameters()]
    assert sum("embed" in n for n in names) == 1
    model.eval()
    tokens = torch.randint(0, 300, (1, 8))
    with torch.no_grad():
        hidden = model.embed(tokens) + model.position(torch.arange(8))
        for block in model.blocks:
            hidden = block(hidden)
        expected = model.norm(hidden) @ model.embed.weight.T
        assert torch.allclose(model(tokens), expected, atol=1e-5)
    # the first loss of a fresh model is about log(vocab): nothing learnt yet
    with torch.no_grad():
        logits = model(tokens)
    loss = F.cross_entropy(logits[0, :-1], tokens[0, 1:])
    assert abs(float(loss) - math.log(300)) < 0.5


def test_context_is_enforced():
    config, model = _model()
    with pytest.raises(ValueError, match="exceeds the context"):
        model(torch.zeros(1, config.context + 1, dtype=torch.long))


def test_presets_and_validation():
    assert set(PRESETS) == {"ci", "cpu", "gpu"}
    assert proxy_config("cpu", steps=7).steps == 7
    assert proxy_config("cpu", steps=None).steps == PRESETS["cpu"].steps
    assert proxy_config("gpu").budget == 2000 * 64 * 512
    with pytest.raises(ValueError, match="unknown preset 'tiny'"):
        proxy_config("tiny")
    with pytest.raises(ValueError, match="not divisible by heads"):
        proxy_config("ci", width=30, heads=4)
    with pytest.raises(ValueError, match="unknown proxy setting"):
        proxy_config("ci", depth=3)
    with pytest.raises(ValueError, match="vocab_size"):
        proxy_config("ci", vocab_size=100)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        proxy_config("ci", steps=0)


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    config = proxy_config("ci", steps=100, warmup=0.1, lr=1.0)
    rates = [learning_rate(s, config) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(b <= a + 1e-12 for a, b in zip(rates[9:], rates[10:], strict=False))
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)


def test_device_and_threads():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("abacus")
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        with torch_threads(0):
            pass
