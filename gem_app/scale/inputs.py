"""Reading input shards (JSONL, optionally gzipped, or Parquet) in record batches, and
validating their rows; every problem becomes a per-row rejection with its reason."""

from __future__ import annotations

import glob
import gzip
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gem_app.io.records import MISSING, estimate_tokens, json_error, parse_token_count, text_problem

JSONL_SUFFIXES = (".jsonl", ".ndjson")
SHARD_SUFFIXES = (*JSONL_SUFFIXES, ".parquet")


# ---------------------------------------------------------------------------- inputs
def find_shards(inputs) -> list[Path]:
    """Shard paths from a glob, a directory, a file or a list of those (sorted, unique)."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found += [p for p in sorted(path.iterdir()) if _is_shard(p)]
        elif path.is_file():
            found.append(path)
        else:
            matches = [Path(p) for p in sorted(glob.glob(str(item), recursive=True))]
            found += [p for p in matches if p.is_file() and _is_shard(p)]
    shards = sorted({p.resolve() for p in found})
    if not shards:
        raise ValueError(f"no input shards (.jsonl, .ndjson, .parquet, .gz) match {inputs!r}")
    for p in shards:
        if not _is_shard(p):
            raise ValueError(f"{p}: unknown shard type (expected {', '.join(SHARD_SUFFIXES)})")
    stems: dict[str, Path] = {}
    for p in shards:
        other = stems.setdefault(shard_stem(p), p)
        if other != p:
            raise ValueError(f"{other} and {p} would both write {shard_stem(p)}.parquet")
    return shards


def _is_shard(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(SHARD_SUFFIXES)


def shard_stem(path) -> str:
    """Output name of a shard: its file name without .gz and the format suffix."""
    name = Path(path).name
    name = name[:-3] if name.lower().endswith(".gz") else name
    return name.rsplit(".", 1)[0]


@dataclass
class Columns:
    """Column mapping of the input shards."""

    text: str = "text"
    id: str | None = "id"
    tokens: str | None = None
    embeddings: str | None = None


def read_batches(path, columns: Columns, batch_size: int):
    """Yield lists of raw records ``(row, values_dict_or_None, reason_or_None)``.

    Parquet is read with pyarrow in record batches; JSONL line by line (a non-UTF-8,
    malformed or non-object line becomes a record with its reason). Raises ValueError
    naming the shard for a corrupt Parquet file or a Parquet shard without the text column.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        return
    if path.name.lower().removesuffix(".gz").endswith(".parquet"):
        yield from _parquet_batches(path, columns, batch_size)
    else:
        yield from _jsonl_batches(path, batch_size)


def _parquet_batches(path: Path, columns: Columns, batch_size: int):
    try:
        reader = pq.ParquetFile(path)
        names = reader.schema_arrow.names
        if columns.text not in names:
            raise ValueError(
                f"{path.name}: text column {columns.text!r} not found; columns are {names}"
            )
        wanted = [
            c
            for c in (columns.text, columns.id, columns.tokens, columns.embeddings)
            if c is not None and c in names
        ]
        row = 0
        for batch in reader.iter_batches(batch_size=batch_size, columns=wanted):
            data = batch.to_pydict()
            n = batch.num_rows
            yield [(row + i, {c: data[c][i] for c in wanted}, None) for i in range(n)]
            row += n
    except (pa.ArrowException, OSError) as exc:
        message = " ".join(str(exc).split())
        raise ValueError(f"{path.name}: corrupt or unreadable Parquet file ({message})") from None


def _jsonl_batches(path: Path, batch_size: int):
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    batch = []
    with opener(path, "rb") as fh:
        for line_no, raw in enumerate(fh):
            if not raw.strip():
                continue
            batch.append((line_no, *_parse_line(raw, line_no)))
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def _parse_line(raw: bytes, line_no: int):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            None,
            f"line {line_no + 1}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at {exc.start})",
        )
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"line {line_no + 1}: malformed JSON ({json_error(exc, text)})"
    if not isinstance(value, dict):
        return None, f"line {line_no + 1}: not a JSON object"
    return value, None


# ---------------------------------------------------------------------------- rows
def row_problem(values, columns: Columns, needs_embedding: bool):
    """(text, tokens, embedding, reason) of one record; reason is None for a good row.

    The text and token-count rules are the corpus reader's (:mod:`gem_app.io.records`).
    """
    text = values.get(columns.text, MISSING)
    reason = text_problem(text, columns.text)
    if reason is not None:
        return None, None, None, reason
    if columns.tokens is not None:
        tokens, reason = parse_token_count(values.get(columns.tokens, MISSING), columns.tokens)
        if reason is not None:
            return None, None, None, reason
    else:
        tokens = int(estimate_tokens([text])[0])
    embedding = None
    if needs_embedding and columns.embeddings is not None:
        embedding = values.get(columns.embeddings)
        try:
            vec = np.asarray(embedding, dtype=np.float32)
        except (TypeError, ValueError):
            vec = None
        if vec is None or vec.ndim != 1 or not np.all(np.isfinite(vec)) or not np.any(vec):
            return None, None, None, f"invalid embedding in column {columns.embeddings!r}"
        embedding = vec
    return text, tokens, embedding, None


def id_text(value):
    if value is None or isinstance(value, bool) or isinstance(value, float):
        return (
            None if value is None or isinstance(value, float) and math.isnan(value) else str(value)
        )
    return str(value)
