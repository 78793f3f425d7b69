"""A workspace with one fit of N planted synthetic documents (the 200k Map test, bench_map,
bench_app)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gem_app.app import state as app_state


def synthetic_fit(
    root: Path,
    n: int,
    *,
    k: int,
    d: int,
    vocabulary: int = 200,
    words_per_doc: int = 5,
    seed: int = 0,
    max_iter: int = 10,
) -> Path:
    """Fit ``synthetic`` (K topics as Gaussian blobs in d dimensions) into ``root/workspace``.

    Each document is ``words_per_doc`` words of its topic's stretch of a ``vocabulary``-word
    list, with a ``topic`` label column and a ``tokens`` column; GEM runs ``max_iter`` MM
    iterations. Returns the workspace root.
    """
    rng = np.random.default_rng(seed)
    topic = rng.integers(k, size=n)
    words = np.array([f"w{i}" for i in range(vocabulary)])
    picks = (topic[:, None] * 23 + rng.integers(0, 20, (n, words_per_doc))) % vocabulary
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "text": [" ".join(r) for r in words[picks]],
            "topic": [f"t{t}" for t in topic],
            "tokens": rng.integers(20, 400, size=n),
        }
    )
    frame.to_parquet(root / "synthetic.parquet")
    X = rng.normal(size=(k, d))[topic] * 2.0 + rng.normal(size=(n, d))
    np.save(root / "synthetic.npy", X.astype(np.float32))
    ws = app_state.open_workspace(root / "workspace")
    app_state.fit_into_workspace(
        ws,
        "synthetic",
        root / "synthetic.parquet",
        n_clusters=k,
        embeddings=root / "synthetic.npy",
        label_col="topic",
        tokens_col="tokens",
        random_state=0,
        max_iter=max_iter,
    )
    return ws.root
