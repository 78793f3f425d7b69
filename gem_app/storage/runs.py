"""A fit run: corpus + embeddings -> GEM -> a run folder, and loading it back.

A run folder holds

- ``model.safetensors`` and ``model.json``: the fitted GEM (see :meth:`GEM.save`); the
  JSON's ``metadata`` records the data source, the column mapping, the embeddings
  file, corpus totals and every rejected row with its reason;
- ``assignments.parquet``: one row per valid document: ``id``, ``cluster``,
  ``probability`` (of that cluster), ``tokens`` (plus ``label`` when a human label
  column was mapped);
- ``embeddings.npy``: the embeddings of the valid rows, when they were computed by
  the fit (given embeddings are referenced, not copied).

The CLI and the app both go through :func:`fit_corpus` and :func:`load_run`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gem_app.core.gem import GEM
from gem_app.io.corpus import Corpus, load_corpus
from gem_app.io.embeddings import corpus_embeddings
from gem_app.io.encoder import DEFAULT_MODEL
from gem_app.utils.files import atomic_path

ASSIGNMENTS = "assignments.parquet"
EMBEDDINGS = "embeddings.npy"


@dataclass
class FitRun:
    """A fitted run, loaded.

    Attributes
    ----------
    folder : Path
    model : GEM
    corpus : Corpus
        Valid rows of the source (before the embedding checks).
    frame : pandas.DataFrame
        The documents that were fitted, in order: ``id``, ``text``, ``tokens``
        (and ``label``), aligned with ``embeddings`` and ``assignments``.
    embeddings : ndarray of shape (n_documents, n_features), float32
    assignments : pandas.DataFrame
    metadata : dict
    """

    folder: Path
    model: GEM
    corpus: Corpus
    frame: pd.DataFrame
    embeddings: np.ndarray
    assignments: pd.DataFrame
    metadata: dict

    def proba(self) -> np.ndarray:
        """Soft assignments q of the fitted documents, shape (n_documents, K), float32."""
        return self.model.predict_proba(self.embeddings)


def fit_corpus(
    data,
    out_dir,
    *,
    n_clusters: int,
    embeddings=None,
    text_col="text",
    id_col="id",
    label_col=None,
    tokens_col=None,
    cache_dir=None,
    embed_progress=None,
    **gem_params,
) -> FitRun:
    """Load and validate ``data``, embed (or read) it, fit GEM and write the run folder.

    ``gem_params`` go to :class:`GEM` (balance, temperature, random_state, device,
    concentration, callback, ...). Nothing is written before the fit has succeeded.
    """
    corpus = load_corpus(
        data, text_col=text_col, id_col=id_col, label_col=label_col, tokens_col=tokens_col
    )
    frame, X, embed_rejected = corpus_embeddings(
        corpus, embeddings, cache_dir=cache_dir, progress=embed_progress
    )
    rejected = pd.concat(
        [df for df in (corpus.rejected, embed_rejected) if len(df)] or [corpus.rejected]
    ).sort_values("row", kind="stable")
    if len(frame) == 0:
        raise ValueError(f"{data}: no valid rows are left to fit")
    weights = frame["tokens"].to_numpy(dtype=np.float64)
    model = GEM(n_clusters, **gem_params).fit(X, sample_weight=weights)

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    q = model.predict_proba(X)
    assignments = pd.DataFrame(
        {
            "id": frame["id"].to_numpy(),
            "cluster": model.labels_.astype(np.int64),
            "probability": q[np.arange(len(q)), model.labels_].astype(np.float64),
            "tokens": frame["tokens"].to_numpy(dtype=np.int64),
        }
    )
    if "label" in frame:
        assignments["label"] = frame["label"].to_numpy()
    if embeddings is None:
        with atomic_path(folder / EMBEDDINGS) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, X)
        embeddings_ref = EMBEDDINGS
    else:
        embeddings_ref = str(Path(embeddings).resolve())
    metadata = {
        "data": str(Path(data).resolve()),
        "columns": corpus.columns,
        "embeddings": embeddings_ref,
        "encoder": DEFAULT_MODEL if embeddings is None else None,
        "n_documents": int(len(frame)),
        "n_tokens": int(weights.sum()),
        "tokens_estimated": bool(corpus.tokens_estimated),
        "rejected_rows": [
            {"row": int(r.row), "id": _jsonable(r.id), "reason": str(r.reason)}
            for r in rejected.itertuples(index=False)
        ],
    }
    write_parquet(assignments, folder / ASSIGNMENTS)
    model.save(folder, metadata=metadata)
    return FitRun(folder, model, corpus, frame, X, assignments, metadata)


def load_run(folder) -> FitRun:
    """Load a run folder written by :func:`fit_corpus` (re-reading its data source)."""
    folder = Path(folder)
    model = GEM.load(folder)
    metadata = json.loads((folder / "model.json").read_text(encoding="utf-8"))["metadata"]
    cols = metadata["columns"]
    corpus = load_corpus(
        metadata["data"],
        text_col=cols["text"],
        id_col=cols["id"],
        label_col=cols.get("label"),
        tokens_col=cols.get("tokens"),
    )
    assignments = pd.read_parquet(folder / ASSIGNMENTS)
    ref = metadata["embeddings"]
    if ref == EMBEDDINGS:
        X = np.load(folder / EMBEDDINGS, allow_pickle=False)
        frame = corpus.frame.set_index("id").loc[assignments["id"]].reset_index()
    else:
        frame, X, _ = corpus_embeddings(corpus, ref)
    if len(frame) != len(assignments) or len(X) != len(assignments):
        raise ValueError(
            f"{folder}: the data source changed since the fit ({len(frame)} documents now, "
            f"{len(assignments)} in the run)"
        )
    return FitRun(folder, model, corpus, frame, X, assignments, metadata)


def write_parquet(frame: pd.DataFrame, path) -> None:
    """Write a DataFrame as Parquet, atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    return value
