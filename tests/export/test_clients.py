"""Every training-stack export read back by its real client's own loader.

The clients come from the optional ``clients`` extra (see docs/exports.md for the install
line); each test skips, naming the missing package, when its client is not installed.

- Megatron-LM: ``--data-path`` parsed as Megatron's argument parser declares it
  (``nargs="*"``), then megatron-core's ``get_blend_from_list`` and
  ``BlendedMegatronDatasetConfig``.
- OLMo-core: ``SourceMixtureDatasetConfig.from_yaml``, then ``build`` on token files holding
  each domain's tokens.
- Hugging Face: ``load_dataset`` on tiny Parquet / JSON-lines files at ``data_files``, mixed by
  ``interleave_datasets`` with our ``probabilities``, ``seed`` and ``stopping_strategy``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

from gem_app.export.document import build_mixture_document, training_domains
from gem_app.export.domains import domains_from_run, mix_domains
from gem_app.export.formats import (
    DEFAULT_GLOBAL_BATCH_SIZE,
    OLMO_CORE_VERSION,
    render_mixture,
    write_mixture,
)
from gem_app.storage.runs import fit_corpus

WORDS = [
    ["kernel", "driver", "linux", "module", "firmware"],
    ["python", "library", "package", "binding", "interpreter"],
    ["game", "puzzle", "arcade", "player", "level"],
    ["font", "typeface", "glyph", "unicode", "serif"],
]
INSTALL = (
    "pip install -e '.[clients]' && pip install --no-deps ai2-olmo-core==3.0.0 cached-path==1.8.10"
)


def _client(module: str):
    """Import a client library or skip the test, naming what to install."""
    with warnings.catch_warnings():  # megatron warns that Apex / Transformer Engine are absent
        warnings.simplefilter("ignore")
        return pytest.importorskip(module, reason=f"{module} is not installed ({INSTALL})")


def _run(folder):
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(4, 8)) * 4
    rows, X = [], []
    for i in range(120):
        k = i % 4
        rows.append(
            {
                "id": f"doc{i}",
                "text": " ".join(rng.choice(WORDS[k], 6)),
                "tokens": int(rng.integers(20, 400)),
            }
        )
        X.append(centers[k] + rng.normal(size=8))
    pd.DataFrame(rows).to_parquet(folder / "data.parquet")
    np.save(folder / "emb.npy", np.asarray(X, dtype=np.float32))
    return fit_corpus(
        folder / "data.parquet",
        folder / "run",
        n_clusters=4,
        embeddings=folder / "emb.npy",
        tokens_col="tokens",
        random_state=0,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("clients"))


def _document(run, **mixing):
    domains = domains_from_run(run)
    return build_mixture_document(run, mix_domains(domains, **mixing), domains=domains)


@pytest.fixture(scope="module")
def doc(run):
    """Three training domains (one excluded), epochs above 1 for the boosted one."""
    return _document(run, temperature=2.0, exclude=["1"], boost={"2": 3.0})


# ----------------------------------------------------------------------------- Megatron-LM
def test_megatron_core_parses_the_data_path_blend(doc, tmp_path):
    utils = _client("megatron.core.datasets.utils")
    config = _client("megatron.core.datasets.blended_megatron_dataset_config")
    path = write_mixture(doc, tmp_path / "mix.txt", "megatron", path_template="/data/{domain}")
    # Megatron-LM declares --data-path with nargs="*" (megatron/training/arguments.py)
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-path", nargs="*", default=None)
    args = parser.parse_args(shlex.split(path.read_text(encoding="utf-8")))
    prefixes, weights = utils.get_blend_from_list(args.data_path)
    kept = training_domains(doc)
    assert prefixes == [f"/data/{d['name']}" for d in kept]
    assert weights == [d["weight"] for d in kept]  # bit-exact
    cfg = config.BlendedMegatronDatasetConfig(
        random_seed=0, sequence_length=16, blend=(prefixes, weights), split="100,0,0"
    )
    assert not cfg.mock and cfg.blend == (prefixes, weights)
    np.testing.assert_allclose(utils.normalize(weights), weights, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- OLMo-core
def _token_files(folder, doc):
    """One uint32 token file per training domain, holding exactly the domain's tokens."""
    for d in training_domains(doc):
        np.arange(d["tokens"], dtype=np.uint32).tofile(folder / f"{d['name']}.npy")


@pytest.mark.parametrize(
    "mixing",
    [{}, {"max_epochs": 1.5}, {"max_epochs": 0.6, "budget": 8_000.0}],
    ids=["no-cap", "epoch-cap", "cap-below-one-epoch"],
)
def test_olmo_core_loads_and_builds_the_mixture(run, tmp_path, mixing):
    source_mixture = _client("olmo_core.data.source_mixture")
    doc = _document(run, temperature=2.0, exclude=["1"], boost={"2": 3.0}, **mixing)
    _token_files(tmp_path, doc)
    path = write_mixture(
        doc, tmp_path / "mix.yaml", "olmo", path_template=f"{tmp_path}/{{domain}}.npy"
    )
    config = source_mixture.SourceMixtureDatasetConfig.from_yaml(path)
    kept = training_domains(doc)
    sources = config.source_list.sources
    assert [s.source_name for s in sources] == [d["name"] for d in kept]
    assert [s.target_ratio for s in sources] == [d["weight"] for d in kept]
    assert [s.paths for s in sources] == [[f"{tmp_path}/{d['name']}.npy"] for d in kept]
    assert config.requested_tokens == round(doc["mixing"]["budget"])
    assert config.global_batch_size == DEFAULT_GLOBAL_BATCH_SIZE
    assert config.seed == doc["model"]["seed"]
    config.validate()
    # build: OLMo counts each file's tokens and checks every domain can supply its share
    config.global_batch_size, config.render_tables, config.quiet = 64 * 8, False, True
    built = config.build(npdtype=np.uint32, sequence_length=64)
    selected = {o.name: sum(p.tokens for p in o.path_tokens) for o in built.sources}
    total = sum(selected.values())
    for d in kept:
        assert selected[d["name"]] / total == pytest.approx(d["weight"], abs=0.02)


def test_olmo_layout_batch_size_and_epoch_limits_without_the_client(run, doc):
    """The OLMo-core 3.0 layout as plain YAML (runs without the clients extra)."""
    text = render_mixture(doc, "olmo", global_batch_size=2048)
    assert text.startswith(
        f"# OLMo-core SourceMixtureDatasetConfig (ai2-olmo-core {OLMO_CORE_VERSION})"
    )
    config = yaml.safe_load(text)
    assert list(config) == ["source_list", "requested_tokens", "global_batch_size", "seed"]
    assert config["global_batch_size"] == 2048
    kept = training_domains(doc)
    for src, d in zip(config["source_list"]["sources"], kept, strict=True):
        assert src["max_source_fraction"] == 1.0
        assert src["max_repetition_ratio"] >= max(1.0, d["epochs"])  # no cap: room for the epochs
    capped = yaml.safe_load(render_mixture(_document(run, max_epochs=0.5, budget=5000.0), "olmo"))
    assert capped["global_batch_size"] == DEFAULT_GLOBAL_BATCH_SIZE == 2**22
    for src in capped["source_list"]["sources"]:
        assert (src["max_repetition_ratio"], src["max_source_fraction"]) == (1.0, 0.5)
    for bad in (0, -4096, 1.5, "4096", True):
        with pytest.raises(ValueError, match="global_batch_size"):
            render_mixture(doc, "olmo", global_batch_size=bad)


def test_olmo_core_refuses_what_it_cannot_build(run, doc, tmp_path):
    """Independent check that the build test above can fail: too few tokens in a file."""
    source_mixture = _client("olmo_core.data.source_mixture")
    exceptions = _client("olmo_core.exceptions")
    _token_files(tmp_path, doc)
    first = training_domains(doc)[0]["name"]
    np.arange(10, dtype=np.uint32).tofile(tmp_path / f"{first}.npy")
    path = write_mixture(
        doc, tmp_path / "mix.yaml", "olmo", path_template=f"{tmp_path}/{{domain}}.npy"
    )
    config = source_mixture.SourceMixtureDatasetConfig.from_yaml(path)
    config.global_batch_size, config.render_tables, config.quiet = 64 * 8, False, True
    with pytest.raises(exceptions.OLMoConfigurationError, match=first):
        config.build(npdtype=np.uint32, sequence_length=64)


# ----------------------------------------------------------------------------- Hugging Face
@pytest.mark.parametrize("builder, suffix", [("parquet", ".parquet"), ("json", ".jsonl")])
def test_datasets_interleaves_the_domains_with_our_probabilities(doc, tmp_path, builder, suffix):
    hf = _client("datasets")
    kept = training_domains(doc)
    for d in kept:
        frame = pd.DataFrame({"domain": [d["name"]] * 200, "text": [f"t{i}" for i in range(200)]})
        target = tmp_path / f"{d['name']}{suffix}"
        if builder == "parquet":
            frame.to_parquet(target)
        else:
            frame.to_json(target, orient="records", lines=True)
    path = write_mixture(
        doc, tmp_path / "mix.json", "hf", path_template=f"{tmp_path}/{{domain}}{suffix}"
    )
    cfg = json.loads(path.read_text(encoding="utf-8"))
    parts = [
        hf.load_dataset(
            builder,
            data_files=cfg["data_files"][name],
            split="train",
            cache_dir=str(tmp_path / "c"),
        )
        for name in cfg["domains"]
    ]
    mixed = hf.interleave_datasets(
        parts,
        probabilities=cfg["probabilities"],
        seed=cfg["seed"],
        stopping_strategy=cfg["stopping_strategy"],
    )
    counts = pd.Series(mixed["domain"]).value_counts()
    n = len(mixed)
    assert set(counts.index) == {d["name"] for d in kept}
    for d in kept:  # the sampled shares follow the weights (5 binomial standard deviations)
        p = d["weight"]
        assert abs(counts[d["name"]] / n - p) <= 5 * np.sqrt(p * (1 - p) / n)
