"""Materialize a mixture: one shard per domain (Parquet or JSONL; ids only or full texts).

The run's documents are streamed in record batches; each batch is split by domain (one stable
sort) and appended to that domain's shard. Every shard is written to a temporary file and
renamed only when the whole export has succeeded, then ``manifest.json`` (counts, tokens,
sha256 and size of every shard) and a copy of the canonical ``mixture.json`` are written, also
atomically. Every assigned document lands in exactly one shard; the per-domain document and
token counts are checked against the mixture document before anything is renamed.
"""

from __future__ import annotations

import contextlib
import json
import resource
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gem_app.export.document import validate_mixture_document
from gem_app.export.domains import run_taxonomy
from gem_app.storage.runs import ASSIGNMENTS, load_run
from gem_app.taxonomy.tree import TAXONOMY_FILE
from gem_app.utils.files import atomic_path, file_sha256, write_json

__all__ = ["SHARD_FORMATS", "CONTENTS", "materialize", "write_shards", "run_batches"]

SHARD_FORMATS = ("parquet", "jsonl")
CONTENTS = ("ids", "text")
MANIFEST = "manifest.json"
_ROW_GROUP_ROWS = 65536
_RESERVED_FILES = 32


def _check_options(format: str, content: str, batch_size: int) -> None:
    if format not in SHARD_FORMATS:
        raise ValueError(f"shard format must be one of {', '.join(SHARD_FORMATS)}, got {format!r}")
    if content not in CONTENTS:
        raise ValueError(f"shard content must be one of {', '.join(CONTENTS)}, got {content!r}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _check_open_files(n_shards: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = n_shards + _RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft != resource.RLIM_INFINITY and soft < needed:
            raise ValueError(
                f"{n_shards} shards need {needed} open files but the limit is {soft}; "
                "raise it (ulimit -n) or merge domains"
            )


class _Shard:
    """One domain's shard being written to a temporary path."""

    def __init__(self, tmp: Path, format: str):
        self.tmp, self.format = tmp, format
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.writer = None
        self.handle = None
        self.documents = 0
        self.tokens = 0

    def add(self, table: pa.Table) -> None:
        self.documents += table.num_rows
        self.tokens += int(pc.sum(table.column("tokens")).as_py() or 0)
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= _ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        self.pending, self.pending_rows = [], 0
        if self.format == "parquet":
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.tmp, table.schema)
            self.writer.write_table(table)
        else:
            if self.handle is None:
                self.handle = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115
            self.handle.write(_jsonl(table))

    def close(self, schema: pa.Schema | None) -> None:
        self.flush()
        if self.format == "parquet":
            if self.writer is None and schema is not None:
                self.writer = pq.ParquetWriter(self.tmp, schema)  # an empty shard
            if self.writer is not None:
                self.writer.close()
        elif self.handle is not None:
            self.handle.close()
        if not self.tmp.exists():
            self.tmp.touch()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self.writer is not None:
                self.writer.close()
            if self.handle is not None:
                self.handle.close()


def _jsonl(table: pa.Table) -> str:
    frame = table.to_pandas()
    text = frame.to_json(orient="records", lines=True, force_ascii=False)
    return text if text.endswith("\n") else text + "\n"


def _shard_name(domain: Mapping, format: str) -> str:
    return f"{domain['name']}.{format}"


def write_shards(
    doc: Mapping,
    batches: Iterable,
    out_dir,
    *,
    format: str = "parquet",
    content: str = "ids",
    include_excluded: bool = True,
    total: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write one shard per domain from a stream of record batches; return the manifest.

    Parameters
    ----------
    doc : mapping
        A valid mixture document; its domain order indexes the ``domain`` column.
    batches : iterable of pyarrow.Table or RecordBatch
        Columns ``id``, ``tokens`` (int), ``domain`` (int, index into ``doc["domains"]``) and,
        for ``content="text"``, ``text``.
    out_dir : path
        Folder for the shards, ``manifest.json`` and ``mixture.json`` (created).
    format : {"parquet", "jsonl"}
    content : {"ids", "text"}
        Columns written: ``id, tokens`` or ``id, text, tokens``.
    include_excluded : bool
        Also write shards of excluded domains (weight 0), so that every document is somewhere.
        Without, their documents are counted in the manifest's ``skipped_documents``.
    total : int, optional
        Total documents, for ``progress(done, total)``.

    Returns
    -------
    dict
        The manifest: ``documents``, ``tokens``, ``skipped_documents``, and ``shards``, one
        ``{domain, name, path, weight, excluded, documents, tokens, sha256, bytes}`` per shard.

    Raises
    ------
    ValueError
        Bad options, a domain index out of range, missing columns, or shard counts that differ
        from the mixture document (the run changed since the mixture was built).
    """
    _check_options(format, content, 1)
    doc = validate_mixture_document(doc)
    domains = doc["domains"]
    n = len(domains)
    written = [i for i, d in enumerate(domains) if include_excluded or not d["excluded"]]
    keep = np.zeros(n, dtype=bool)
    keep[written] = True
    _check_open_files(len(written))
    columns = ["id", "text", "tokens"] if content == "text" else ["id", "tokens"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards: dict[int, _Shard] = {}
    schema = None
    done = skipped = 0
    with contextlib.ExitStack() as stack:
        for i in written:
            tmp = stack.enter_context(atomic_path(out / _shard_name(domains[i], format)))
            shards[i] = _Shard(tmp, format)
        try:
            for batch in batches:
                table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
                missing = [c for c in (*columns, "domain") if c not in table.column_names]
                if missing:
                    raise ValueError(f"document batches lack column(s) {missing}")
                domain = np.asarray(
                    table.column("domain").to_numpy(zero_copy_only=False), dtype=np.int64
                )
                bad = np.flatnonzero((domain < 0) | (domain >= n))
                if bad.size:
                    raise ValueError(
                        f"document {done + int(bad[0])} has domain index {int(domain[bad[0]])}, "
                        f"outside 0..{n - 1}"
                    )
                order = np.argsort(domain, kind="stable")
                sorted_domain = domain[order]
                table = table.select(columns).take(pa.array(order))
                schema = table.schema if schema is None else schema
                starts = np.flatnonzero(np.r_[True, sorted_domain[1:] != sorted_domain[:-1]])
                ends = np.r_[starts[1:], sorted_domain.size]
                for start, end in zip(starts, ends, strict=True):
                    d = int(sorted_domain[start])
                    if keep[d]:
                        shards[d].add(table.slice(int(start), int(end - start)))
                    else:
                        skipped += int(end - start)
                done += len(domain)
                if progress is not None:
                    progress(done, total if total is not None else done)
            for shard in shards.values():
                shard.close(schema)
        except BaseException:
            for shard in shards.values():
                shard.abort()
            raise
        _check_counts(doc, shards, skipped)
    records = []
    for i in written:
        path = out / _shard_name(domains[i], format)
        records.append(
            {
                "domain": domains[i]["id"],
                "name": domains[i]["name"],
                "path": path.name,
                "weight": domains[i]["weight"],
                "excluded": domains[i]["excluded"],
                "documents": shards[i].documents,
                "tokens": shards[i].tokens,
                "sha256": file_sha256(path),
                "bytes": path.stat().st_size,
            }
        )
    mixture_text = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    with atomic_path(out / "mixture.json") as tmp:
        tmp.write_text(mixture_text, encoding="utf-8")
    manifest = {
        "kind": "gem-shards",
        "schema_version": doc["schema_version"],
        "format": format,
        "content": content,
        "columns": columns,
        "mixture": "mixture.json",
        "mixture_sha256": file_sha256(out / "mixture.json"),
        "documents": int(sum(r["documents"] for r in records)),
        "tokens": int(sum(r["tokens"] for r in records)),
        "skipped_documents": int(skipped),
        "shards": records,
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def _check_counts(doc: Mapping, shards: dict[int, _Shard], skipped: int) -> None:
    """Shard counts must equal the mixture's; raised inside the ExitStack so nothing is renamed."""
    domains = doc["domains"]
    for i, shard in shards.items():
        d = domains[i]
        if shard.documents != d["documents"] or shard.tokens != d["tokens"]:
            raise ValueError(
                f"domain {d['id']} ({d['name']}): the run has {shard.documents} documents / "
                f"{shard.tokens} tokens but the mixture says {d['documents']} / {d['tokens']}; "
                "the run changed since the mixture was built"
            )
    expected = doc["assignments"]["documents"]
    seen = sum(s.documents for s in shards.values()) + skipped
    if seen != expected:
        raise ValueError(f"streamed {seen} documents but the mixture covers {expected}")


# ----------------------------------------------------------------------------- from a run
def _domain_lookup(doc: Mapping, run_folder: Path, n_rows: int, cluster: np.ndarray | None):
    """Domain index per document of the run (aligned with its assignments)."""
    position = {d["id"]: i for i, d in enumerate(doc["domains"])}
    if doc["mixing"]["domain_source"] == "taxonomy":
        taxonomy = run_taxonomy(run_folder)
        if taxonomy is None:
            raise ValueError(f"the mixture was built on a taxonomy but {run_folder} has none")
        leaf = pd.Series(np.asarray(taxonomy.document_leaf).astype(str)).map(position)
    else:
        leaf = pd.Series(np.asarray(cluster).astype(np.int64).astype(str)).map(position)
    if len(leaf) != n_rows:
        raise ValueError(f"the run assigns {len(leaf)} documents but has {n_rows}")
    if leaf.isna().any():
        row = int(np.flatnonzero(leaf.isna().to_numpy())[0])
        raise ValueError(f"document row {row} belongs to no domain of the mixture")
    return leaf.to_numpy(dtype=np.int64)


def _check_same_assignments(doc: Mapping, run_folder: Path) -> None:
    expected = doc["assignments"].get("sha256")
    path = run_folder / ASSIGNMENTS
    if expected is not None and path.is_file() and file_sha256(path) != expected:
        raise ValueError(
            f"{path} changed since the mixture was built (sha256 differs); rebuild the mixture"
        )
    expected = doc["assignments"].get("taxonomy_sha256")
    path = run_folder / TAXONOMY_FILE
    if expected is not None and path.is_file() and file_sha256(path) != expected:
        raise ValueError(
            f"{path} changed since the mixture was built (taxonomy edited); rebuild the mixture"
        )


def run_batches(run, doc: Mapping, *, content: str = "ids", batch_size: int = 65536):
    """Record batches (``id``, ``tokens``, ``domain`` [, ``text``]) of a run's documents.

    ``run`` is a :class:`gem_app.storage.runs.FitRun` or a run folder. For ``content="ids"`` and a
    folder, ``assignments.parquet`` is streamed without loading the model or the data.
    Returns ``(iterator, n_documents)``.
    """
    if isinstance(run, (str, Path)):
        folder = Path(run)
        _check_same_assignments(doc, folder)
        if content == "ids":
            parquet = pq.ParquetFile(folder / ASSIGNMENTS)
            n_rows = parquet.metadata.num_rows
            cluster = parquet.read(columns=["cluster"]).column("cluster").to_numpy()
            domain = _domain_lookup(doc, folder, n_rows, cluster)

            def stream():
                offset = 0
                for batch in parquet.iter_batches(batch_size=batch_size, columns=["id", "tokens"]):
                    part = domain[offset : offset + batch.num_rows]
                    offset += batch.num_rows
                    yield pa.Table.from_batches([batch]).append_column("domain", pa.array(part))

            return stream(), n_rows
        run = load_run(folder)
    folder = Path(run.folder)
    _check_same_assignments(doc, folder)
    assignments = run.assignments
    n_rows = len(assignments)
    domain = _domain_lookup(doc, folder, n_rows, assignments["cluster"].to_numpy())
    frame = pd.DataFrame(
        {"id": assignments["id"].to_numpy(), "tokens": assignments["tokens"].to_numpy()}
    )
    if content == "text":
        if not np.array_equal(run.frame["id"].to_numpy(), frame["id"].to_numpy()):
            raise ValueError("the run's documents and assignments are not aligned (ids differ)")
        frame.insert(1, "text", run.frame["text"].to_numpy())
    frame["domain"] = domain

    def stream():
        for start in range(0, n_rows, batch_size):
            yield pa.Table.from_pandas(frame.iloc[start : start + batch_size], preserve_index=False)

    return stream(), n_rows


def materialize(
    run,
    doc: Mapping,
    out_dir,
    *,
    format: str = "parquet",
    content: str = "ids",
    batch_size: int = 65536,
    include_excluded: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write the run's documents as one shard per domain of ``doc``; return the manifest.

    Parameters
    ----------
    run : gem_app.storage.runs.FitRun or path
        The fitted run the mixture was built from (its assignments' sha256 must match).
    doc : mapping
        The mixture document.
    out_dir : path
    format : {"parquet", "jsonl"}
    content : {"ids", "text"}
    batch_size : int
        Documents per streamed batch.
    include_excluded : bool
        See :func:`write_shards`.
    progress : callable(done, total), optional
    """
    _check_options(format, content, batch_size)
    doc = validate_mixture_document(doc)
    batches, n_rows = run_batches(run, doc, content=content, batch_size=int(batch_size))
    return write_shards(
        doc,
        batches,
        out_dir,
        format=format,
        content=content,
        include_excluded=include_excluded,
        total=n_rows,
        progress=progress,
    )
