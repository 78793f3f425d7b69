"""A small planted corpus, fitted into a run folder, and a finished ci study of it.

Three clusters with very different byte statistics (lower-case letters, digits, upper-case and
punctuation), well separated embeddings, two human categories per cluster and a token column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gem_app.storage.runs import fit_corpus
from gem_app.study.config import StudyConfig
from gem_app.study.runner import run_study

ALPHABETS = ["abcdefgh ", "0123456789 ", "XYZ!?#@ "]


def planted_frame(n_per_domain: int = 60, *, short: bool = False, seed: int = 0) -> pd.DataFrame:
    """Rows ``id, text, section, tokens`` of the planted corpus (``short``: 3-byte texts)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(3 * n_per_domain):
        k = i % 3
        size = 3 if short else int(rng.integers(120, 260))
        text = "".join(rng.choice(list(ALPHABETS[k]), size))
        rows.append(
            {"id": f"d{i}", "text": text, "section": f"sec{k}{i % 2}", "tokens": size // 2 + 1}
        )
    return pd.DataFrame(rows)


def fit_planted(folder, frame: pd.DataFrame, seed: int = 0):
    """Fit GEM with 3 clusters on ``frame`` (embeddings planted per domain) into ``folder/run``."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 8)) * 6
    domain = np.arange(len(frame)) % 3
    X = (centers[domain] + rng.normal(size=(len(frame), 8))).astype(np.float32)
    frame.to_parquet(folder / "data.parquet")
    np.save(folder / "emb.npy", X)
    fit_corpus(
        folder / "data.parquet",
        folder / "run",
        n_clusters=3,
        embeddings=folder / "emb.npy",
        label_col="section",
        tokens_col="tokens",
        random_state=0,
    )
    return folder / "run"


@pytest.fixture(scope="session")
def planted_run(tmp_path_factory):
    return fit_planted(tmp_path_factory.mktemp("planted"), planted_frame())


@pytest.fixture(scope="session")
def short_run(tmp_path_factory):
    return fit_planted(tmp_path_factory.mktemp("short"), planted_frame(30, short=True))


#: The settings of the shared finished study.
CI = StudyConfig(preset="ci", n_proxies=5)


@pytest.fixture(scope="session")
def finished_study(planted_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "study"
    result = run_study(planted_run, out, CI)
    return planted_run, out, result
