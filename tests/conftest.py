"""Helpers shared by the test packages: planted corpora, JSON lines, fitted runs.

Import them (``from tests.conftest import topic_corpus``) or take the fixtures of the same
name. Every helper writes into the folder it is given, so tests never share a workspace.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gem_app.storage.runs import fit_corpus


def write_jsonl(path, records):
    """One JSON object per line (UTF-8, non-ASCII kept); returns ``path``."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")
    return path


def topic_corpus(folder, *, n_topics=4, n_subs=2, n_per=30, dim=16, seed=0, stop_words_only=False):
    """Topics x subtopics with disjoint word pools and matching planted embeddings.

    Writes ``folder/data.parquet`` (id, text, section = the topic, tokens) and
    ``folder/emb.npy``; returns ``(data path, embeddings path, truth)`` with ``truth`` the
    (topic, subtopic) of every row, shape (n, 2).
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_topics, dim)) * 3
    offsets = rng.normal(size=(n_topics, n_subs, dim)) * 1.2
    rows, X, truth = [], [], []
    for t in range(n_topics):
        for s in range(n_subs):
            for _ in range(n_per):
                if stop_words_only:
                    words = list(rng.choice(["the", "and", "of", "is", "it"], 8))
                else:
                    words = [f"topic{t}w{j}" for j in rng.integers(0, 6, 6)]
                    words += [f"sub{t}x{s}w{j}" for j in rng.integers(0, 5, 6)] + ["the"]
                rows.append(
                    {
                        "id": f"d{len(rows)}",
                        "text": " ".join(words),
                        "section": f"sec{t}",
                        "tokens": int(rng.integers(20, 200)),
                    }
                )
                X.append(centers[t] + offsets[t, s] + rng.normal(size=dim) * 0.4)
                truth.append((t, s))
    pd.DataFrame(rows).to_parquet(folder / "data.parquet")
    np.save(folder / "emb.npy", np.asarray(X, dtype=np.float32))
    return folder / "data.parquet", folder / "emb.npy", np.array(truth)


def fit_run(data, embeddings, out, k, **params):
    """``fit_corpus`` with the planted corpora's columns (section, tokens) and seed 0."""
    params = {"label_col": "section", "tokens_col": "tokens", "random_state": 0, **params}
    return fit_corpus(data, out, n_clusters=k, embeddings=embeddings, **params)


@pytest.fixture(name="write_jsonl")
def write_jsonl_fixture():
    return write_jsonl


@pytest.fixture(name="topic_corpus")
def topic_corpus_fixture():
    return topic_corpus


@pytest.fixture(name="fit_run")
def fit_run_fixture():
    return fit_run
