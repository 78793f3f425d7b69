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

A run folder is one unit. :func:`fit_corpus` writes every file into a new folder beside
``out_dir`` and exchanges it with ``out_dir`` in one step (:func:`replace_folder`), so an
interrupted fit leaves the previous run or the new one, never a mix; files that other
commands had added to the previous run (``taxonomy.json``, ``compare.json``) describe the
old clusters and go with it. ``model.json`` is written last and records fingerprints:
the SHA-256 of ``model.safetensors`` (see :mod:`gem_app.core.model_files`), of
``assignments.parquet`` and ``embeddings.npy``, a SHA-256 over the fitted rows of the data
file (id, text and token count, in order) and, for given embeddings, over the embedding
rows used. :func:`load_run` checks them all, so files of two runs put together, or a
data or embeddings file edited or reordered since the fit, are refused with a message
naming both files. Runs written before the fingerprints existed are read without them.

The CLI and the app both go through :func:`fit_corpus` and :func:`load_run`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gem_app.core.gem import GEM
from gem_app.core.model_files import MODEL_JSON, MODEL_TENSORS, read_model_json
from gem_app.io.corpus import Corpus, load_corpus
from gem_app.io.embeddings import corpus_embeddings
from gem_app.io.encoder import DEFAULT_MODEL
from gem_app.utils.files import (
    atomic_path,
    check_writable_dir,
    file_sha256,
    read_json,
    replace_folder,
)

__all__ = [
    "ASSIGNMENTS",
    "EMBEDDINGS",
    "RUN_FILES",
    "FitRun",
    "check_run_target",
    "corpus_fingerprint",
    "fit_corpus",
    "is_run_folder",
    "load_run",
    "write_parquet",
]

ASSIGNMENTS = "assignments.parquet"
EMBEDDINGS = "embeddings.npy"
#: Every file a fit writes (``embeddings.npy`` only when the fit computed the embeddings).
RUN_FILES = (MODEL_JSON, MODEL_TENSORS, ASSIGNMENTS, EMBEDDINGS)
_REFIT = "refit with `gem fit ... --out {folder}`"


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
    overwrite: bool = False,
    **gem_params,
) -> FitRun:
    """Load and validate ``data``, embed (or read) it, fit GEM and write the run folder.

    ``gem_params`` go to :class:`GEM` (balance, temperature, random_state, device,
    concentration, callback, ...). ``out_dir`` is checked first (see
    :func:`check_run_target`; ``overwrite`` lets a non-run folder be replaced); nothing is
    written before the fit has succeeded, and then the whole folder is replaced at once.
    """
    folder = check_run_target(out_dir, overwrite=overwrite)
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
    embeddings_ref = EMBEDDINGS if embeddings is None else str(Path(embeddings).resolve())
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
    with replace_folder(folder) as build:
        files = {}
        if embeddings is None:
            with atomic_path(build / EMBEDDINGS) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, X)
            files[EMBEDDINGS] = file_sha256(build / EMBEDDINGS)
        write_parquet(assignments, build / ASSIGNMENTS)
        files[ASSIGNMENTS] = file_sha256(build / ASSIGNMENTS)
        metadata["fingerprints"] = {
            "files": files,
            "corpus_sha256": corpus_fingerprint(frame),
            "embeddings_sha256": None if embeddings is None else _array_fingerprint(X),
        }
        model.save(build, metadata=metadata)  # model.json last
    return FitRun(Path(out_dir), model, corpus, frame, X, assignments, metadata)


def is_run_folder(folder) -> bool:
    """Whether ``folder`` holds a ``model.json`` of a GEM model (a run or model folder)."""
    try:
        doc = read_json(Path(folder) / MODEL_JSON)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("format") == "gem-model"


def check_run_target(out_dir, *, overwrite: bool = False) -> Path:
    """Check, before any work, that a run can be written to ``out_dir``; return it as a Path.

    ``out_dir`` may be new, an empty folder, or a run folder (replaced as a whole). A
    non-empty folder that is not a run (another tool's output, a data folder...) is
    refused unless ``overwrite``. The folder that holds ``out_dir`` must be writable (the
    new run is built beside the old one).
    """
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder} is a file, not a run folder")
    if folder.is_dir() and not overwrite and not is_run_folder(folder):
        entries = sorted(p.name for p in folder.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ValueError(
                f"{folder} is not empty and is not a GEM run folder (it holds {shown}); a fit "
                "replaces its output folder as a whole: choose a new or empty folder, or pass "
                "--overwrite to replace it"
            )
    check_writable_dir(folder.resolve().parent, "the folder that holds the run folder")
    return folder


def load_run(folder) -> FitRun:
    """Load a run folder written by :func:`fit_corpus` (re-reading its data source).

    Raises
    ------
    ValueError
        A missing folder or file, a model.json without run metadata, files of different
        fits in one folder, or a data or embeddings file changed since the fit; the message
        names the files and says how to fix it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such run folder (write one with `gem fit --out`)")
    model = GEM.load(folder)
    metadata = _run_metadata(folder)
    fingerprints = metadata.get("fingerprints")
    for name, sha in (fingerprints or {}).get("files", {}).items():
        _check_file(folder, name, sha)
    assignments_path = folder / ASSIGNMENTS
    if not assignments_path.is_file():
        raise ValueError(
            f"{assignments_path} is missing: {folder} is not a complete run folder; "
            + _REFIT.format(folder=folder)
        )
    cols = metadata["columns"]
    corpus = load_corpus(
        metadata["data"],
        text_col=cols["text"],
        id_col=cols["id"],
        label_col=cols.get("label"),
        tokens_col=cols.get("tokens"),
    )
    assignments = pd.read_parquet(assignments_path)
    ref = metadata["embeddings"]
    if ref == EMBEDDINGS:
        X = np.load(folder / EMBEDDINGS, allow_pickle=False)
        by_id = corpus.frame.set_index("id")
        missing = ~assignments["id"].isin(by_id.index)
        if missing.any():
            raise ValueError(
                f"{metadata['data']} no longer holds document id "
                f"{assignments['id'][missing].iloc[0]!r} of the run {folder}; restore the data "
                "file or " + _REFIT.format(folder=folder)
            )
        frame = by_id.loc[assignments["id"]].reset_index()
    else:
        frame, X, _ = corpus_embeddings(corpus, ref)
    if len(frame) != len(assignments) or len(X) != len(assignments):
        raise ValueError(
            f"{folder}: the data source changed since the fit ({len(frame)} documents now, "
            f"{len(assignments)} in the run)"
        )
    if fingerprints:
        _check_data(folder, metadata, frame, X)
    return FitRun(folder, model, corpus, frame, X, assignments, metadata)


def _run_metadata(folder: Path) -> dict:
    """The ``metadata`` of a run's model.json, with the fields :func:`load_run` needs."""
    path = folder / MODEL_JSON
    metadata = read_model_json(path)["metadata"]
    missing = [k for k in ("data", "columns", "embeddings") if k not in metadata]
    if missing or not isinstance(metadata["columns"], dict):
        raise ValueError(
            f"{path}: the metadata lacks {', '.join(missing) or 'columns'}: a model saved "
            "without its run (GEM.save), not a run folder written by `gem fit`"
        )
    return metadata


def _check_file(folder: Path, name: str, sha: str) -> None:
    path = folder / name
    if not path.is_file():
        raise ValueError(
            f"{path} is missing: {folder} is not a complete run folder; "
            + _REFIT.format(folder=folder)
        )
    if file_sha256(path) != sha:
        raise ValueError(
            f"{path} does not belong to {folder / MODEL_JSON} (its SHA-256 differs from the "
            "one recorded by the fit): the folder mixes files of two fits; "
            + _REFIT.format(folder=folder)
        )


def _check_data(folder: Path, metadata: dict, frame: pd.DataFrame, X: np.ndarray) -> None:
    """The data (and given embeddings) must be those the run was fitted on."""
    fingerprints = metadata["fingerprints"]
    if corpus_fingerprint(frame) != fingerprints.get("corpus_sha256"):
        raise ValueError(
            f"{metadata['data']} changed since {folder / MODEL_JSON} was fitted on it (the "
            "ids, texts or token counts of its documents differ: the file was edited or "
            "reordered); restore the data file or " + _REFIT.format(folder=folder)
        )
    expected = fingerprints.get("embeddings_sha256")
    if expected is not None and _array_fingerprint(X) != expected:
        raise ValueError(
            f"{metadata['embeddings']} changed since {folder / MODEL_JSON} was fitted on it "
            "(its rows for the run's documents differ: edited or reordered); restore it or "
            + _REFIT.format(folder=folder)
        )


def corpus_fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 over the documents of ``frame`` in order: id, text and token count of each.

    Every field is length-prefixed, so no two different corpora share a byte stream.
    """
    digest = hashlib.sha256()
    for values in zip(frame["id"], frame["text"], frame["tokens"], strict=True):
        for value in values:
            data = str(value).encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def _array_fingerprint(X: np.ndarray) -> str:
    """SHA-256 of a float32 matrix's shape and bytes (C order)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    digest = hashlib.sha256(repr(X.shape).encode())
    digest.update(X.tobytes())
    return digest.hexdigest()


def write_parquet(frame: pd.DataFrame, path) -> None:
    """Write a DataFrame as Parquet, atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    return value
