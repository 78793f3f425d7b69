"""Embedding matrices: ``.npy`` or a Parquet list column, and the embeddings of a corpus.

Files are read without pickle; a corpus' embeddings are either given (one row per row of
the data file) or computed by the offline encoder (:mod:`gem_app.io.encoder`, cached).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.lib.format as npy_format
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gem_app.core.row_checks import find_invalid_rows
from gem_app.io.corpus import Corpus, CorpusError, check_nonempty_file
from gem_app.io.encoder import embed_texts

__all__ = ["corpus_embeddings", "load_embeddings"]


def load_embeddings(path, *, column=None) -> np.ndarray:
    """Load an embedding matrix from ``.npy`` or ``.parquet``.

    Parameters
    ----------
    path : str or os.PathLike
        ``.npy``: a 2-D float16/float32/float64 array in either byte order, read without
        pickle.
        ``.parquet``: a list or fixed_size_list column of floats, one row per document.
    column : str, optional
        Parquet column to read; by default the only list-typed column.

    Returns
    -------
    numpy.ndarray of float32, shape (N, d)
        Native byte order, C-contiguous. NaN/Inf/zero rows are returned as they are; screen
        them with ``gem_app.core.row_checks.find_invalid_rows``.

    Raises
    ------
    CorpusError
        Unknown extension, missing/empty/corrupt file, not 2-D, empty, not float16/32/64, or a
        finite float64 value beyond float32's range (named by row and column).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".parquet"):
        raise CorpusError(
            f"{path}: unknown embeddings extension {path.suffix!r} (expected .npy or .parquet)"
        )
    check_nonempty_file(path)
    matrix = _load_npy(path) if suffix == ".npy" else _load_parquet_matrix(path, column)
    if matrix.ndim != 2:
        raise CorpusError(f"{path}: embeddings must be 2-D (N, d), got shape {matrix.shape}")
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise CorpusError(f"{path}: embeddings are empty, shape {matrix.shape}")
    native = matrix.dtype.newbyteorder("=")  # big-endian files are read as they are
    if native not in (np.float16, np.float32, np.float64):
        raise CorpusError(
            f"{path}: embeddings dtype {matrix.dtype} not supported (use float16/32/64)"
        )
    return _to_float32(matrix, path)


def _to_float32(matrix: np.ndarray, path) -> np.ndarray:
    """``matrix`` as native C-contiguous float32; CorpusError at a finite value it cannot hold."""
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.dtype.itemsize > 4:
        overflow = np.isinf(out) & np.isfinite(matrix)
        if overflow.any():
            row, col = (int(i[0]) for i in np.nonzero(overflow))
            raise CorpusError(
                f"{path}: row {row}, column {col}: {float(matrix[row, col])!r} does not fit in "
                f"float32 (|x| > {float(np.finfo(np.float32).max):.3g}); rescale the rows "
                "(only their directions are used)"
            )
    return out


def _npy_header(path: Path):
    """``(shape, dtype, data offset)`` from a .npy header, without reading the data."""
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise CorpusError(f"{path}: not a valid .npy file (no NumPy header)")
        fh.seek(0)
        try:
            major, _ = npy_format.read_magic(fh)
            read = (
                npy_format.read_array_header_1_0 if major == 1 else npy_format.read_array_header_2_0
            )
            shape, _, dtype = read(fh)
        except (ValueError, OSError, EOFError) as exc:
            raise CorpusError(f"{path}: not a valid .npy file ({exc})") from None
        return shape, dtype, fh.tell()


def _load_npy(path: Path) -> np.ndarray:
    shape, dtype, offset = _npy_header(path)
    if not dtype.hasobject:  # check the size before numpy allocates what the header announces
        need = math.prod(shape) * dtype.itemsize
        have = path.stat().st_size - offset
        if need > have:
            raise CorpusError(
                f"{path}: truncated .npy file: its header announces shape {shape} of {dtype}, "
                f"{need} bytes of data, but the file holds {have}"
            )
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise CorpusError(
                f"{path}: holds a Python object array; refusing to unpickle it (save a float array)"
            ) from None
        raise CorpusError(f"{path}: not a valid .npy file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise CorpusError(f"{path}: not a valid .npy file ({exc})") from None


def _load_parquet_matrix(path: Path, column) -> np.ndarray:
    try:
        schema = pq.read_schema(path)
        list_cols = [f.name for f in schema if _is_list_type(f.type)]
        if column is None:
            if len(list_cols) != 1:
                raise CorpusError(
                    f"{path}: expected exactly one list column of embeddings, found "
                    f"{list_cols or 'none'}; pass column=... (columns are {schema.names})"
                )
            column = list_cols[0]
        elif column not in schema.names:
            raise CorpusError(
                f"{path}: embeddings column {column!r} not found; columns are {schema.names}"
            )
        elif column not in list_cols:
            raise CorpusError(
                f"{path}: column {column!r} has type {schema.field(column).type}, not a list"
            )
        array = pq.read_table(path, columns=[column]).column(column).combine_chunks()
    except (pa.ArrowException, OSError) as exc:
        message = " ".join(str(exc).split())
        raise CorpusError(f"{path}: truncated or corrupt Parquet file ({message})") from None
    if array.null_count:
        row = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
        raise CorpusError(f"{path}: embeddings column {column!r} is null at row {row}")
    if not pa.types.is_floating(array.type.value_type):
        raise CorpusError(f"{path}: column {column!r} holds {array.type.value_type}, not floats")
    lengths = array.value_lengths().to_numpy(zero_copy_only=False) if len(array) else np.zeros(0)
    if len(lengths) and (lengths != lengths[0]).any():
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise CorpusError(
            f"{path}: ragged embeddings in column {column!r}: row {row} has {lengths[row]} "
            f"values, row 0 has {lengths[0]}"
        )
    d = int(lengths[0]) if len(lengths) else 0
    values = array.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(array), d)


def _is_list_type(type_) -> bool:
    return (
        pa.types.is_list(type_)
        or pa.types.is_large_list(type_)
        or pa.types.is_fixed_size_list(type_)
    )


def corpus_embeddings(
    corpus: Corpus,
    embeddings_path=None,
    *,
    cache_dir=None,
    progress: Callable[[int, int], None] | None = None,
):
    """Embeddings of the corpus' valid rows, and the rows the embedding checks reject.

    Given embeddings must have one row per row of the source file (valid and rejected
    rows alike); the valid rows are picked by their file row numbers. NaN, Inf and
    zero rows are rejected and listed.

    Returns
    -------
    frame : DataFrame (the valid, embeddable documents), X : (n, d) float32,
    rejected : DataFrame with columns row, id, reason (the new rejections)

    Raises
    ------
    CorpusError
        When no row is left: every embedding is a zero vector or holds NaN/Inf (the message
        names the reasons and the first file rows).
    ValueError
        Given embeddings whose row count is not the data file's.
    """
    frame = corpus.frame.reset_index(drop=True)
    if embeddings_path is not None:
        X = load_embeddings(embeddings_path)
        n_file = len(corpus.frame) + len(corpus.rejected)
        if X.shape[0] != n_file:
            raise ValueError(
                f"{embeddings_path} has {X.shape[0]} rows but {corpus.source} has {n_file} rows; "
                "the embeddings must have one row per row of the data file, in order"
            )
        X = X[corpus.source_rows]
    else:
        X = embed_texts(frame["text"].tolist(), cache_dir=cache_dir, progress=progress)
    invalid = find_invalid_rows(X)
    if len(invalid) == len(frame):
        source = embeddings_path if embeddings_path is not None else "the encoder"
        raise CorpusError(
            f"{corpus.source}: no valid rows: {_all_invalid(invalid, corpus, source)}"
        )
    keep = np.ones(len(frame), dtype=bool)
    records = []
    for i, reason in sorted(invalid.items()):
        keep[i] = False
        records.append(
            {
                "row": int(corpus.source_rows[i]),
                "id": frame["id"].iloc[i],
                "reason": f"embedding {reason}",
            }
        )
    rejected = pd.DataFrame(records, columns=["row", "id", "reason"])
    return (
        frame[keep].reset_index(drop=True),
        np.ascontiguousarray(X[keep], dtype=np.float32),
        rejected,
    )


def _all_invalid(invalid: dict[int, str], corpus: Corpus, source, shown: int = 5) -> str:
    """Why every embedding from ``source`` is unusable, naming the first ``shown`` file rows."""
    counts = Counter(invalid.values())
    rows = [int(corpus.source_rows[i]) for i in invalid]
    more = f", ... and {len(rows) - shown} more" if len(rows) > shown else ""
    head = f"all {len(rows)} embeddings from {source} are"
    if len(counts) == 1:
        (reason,) = counts
        listed = ", ".join(str(r) for r in rows[:shown])
        if reason == "zero vector":
            return (
                f"{head} zero vectors (rows {listed}{more}); "
                "a zero vector has no direction on the sphere"
            )
        return f"{head} unusable: {reason} (rows {listed}{more})"
    summary = ", ".join(f"{n} x {reason}" for reason, n in counts.most_common())
    pairs = list(zip(rows, invalid.values(), strict=True))[:shown]
    listed = ", ".join(f"row {r} ({reason})" for r, reason in pairs)
    return f"{head} unusable ({summary}): {listed}{more}"
