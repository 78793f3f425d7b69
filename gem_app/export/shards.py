"""Materialize a mixture: one shard per domain (Parquet or JSONL; ids only or full texts).

The run's documents are streamed in record batches; each batch is split by domain (one stable
sort) and appended to that domain's shard. A materialization is one unit: the shards, a copy
of the canonical ``mixture.json`` and ``manifest.json`` (counts, tokens, sha256 and size of
every shard, and ``written_by``: the tool and the fingerprint of the run's model) are written
into a new folder beside the output folder, which replaces it in one step when everything
succeeded (:func:`gem_app.utils.files.replace_folder`). An interrupted export leaves the
previous materialization or the new one, never a mix; its temporary folder is removed by the
next export to the same place. Every assigned document lands in exactly one shard; the
per-domain document and token counts are checked against the mixture document before the
swap.

The output folder is checked before any work (:func:`check_shards_target`): a folder holding
another tool's output (for example a ``gem assign`` manifest), the shards of another run, or
files that no tool of GEM Studio wrote is refused unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa

from gem_app.core.model_files import MODEL_TENSORS
from gem_app.export.document import validate_mixture_document
from gem_app.export.run_batches import run_batches
from gem_app.export.shard_writer import ShardWriter, check_open_files
from gem_app.utils.files import (
    atomic_path,
    check_writable_dir,
    file_sha256,
    read_json,
    replace_folder,
    write_json,
)

__all__ = [
    "CONTENTS",
    "MANIFEST_KIND",
    "SHARD_FORMATS",
    "check_shard_options",
    "check_shards_target",
    "materialize",
    "write_shards",
]

SHARD_FORMATS = ("parquet", "jsonl")
CONTENTS = ("ids", "text")
MANIFEST = "manifest.json"
MANIFEST_KIND = "gem-shards"
TOOL = "gem export --materialize"


def check_shard_options(format: str, content: str, batch_size: int) -> None:
    """The shard format, content and batch size, checked before anything is read or written."""
    if format not in SHARD_FORMATS:
        raise ValueError(f"shard format must be one of {', '.join(SHARD_FORMATS)}, got {format!r}")
    if content not in CONTENTS:
        raise ValueError(f"shard content must be one of {', '.join(CONTENTS)}, got {content!r}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


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
    writer: Mapping | None = None,
    overwrite: bool = False,
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
    writer : mapping, optional
        Who writes (``{"run": folder, "model_sha256": ...}``), recorded as the manifest's
        ``written_by`` and compared with the folder's previous writer.
    overwrite : bool
        Replace ``out_dir`` even when it holds another tool's or another run's output.

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
    check_shard_options(format, content, 1)
    doc = validate_mixture_document(doc)
    domains = doc["domains"]
    written = [i for i, d in enumerate(domains) if include_excluded or not d["excluded"]]
    check_open_files(len(written))
    columns = ["id", "text", "tokens"] if content == "text" else ["id", "tokens"]
    written_by = {"tool": TOOL, **dict(writer or {})}
    check_shards_target(out_dir, written_by, overwrite=overwrite)
    with replace_folder(out_dir) as build:
        return _write_shard_folder(
            doc, batches, build, format, content, columns, written, total, progress, written_by
        )


def _write_shard_folder(
    doc, batches, out: Path, format, content, columns, written, total, progress, written_by
) -> dict:
    """Write the shards, mixture.json and manifest.json into the new folder ``out``."""
    domains = doc["domains"]
    n = len(domains)
    keep = np.zeros(n, dtype=bool)
    keep[written] = True
    shards: dict[int, ShardWriter] = {}
    schema = None
    done = skipped = 0
    with contextlib.ExitStack() as stack:
        for i in written:
            tmp = stack.enter_context(atomic_path(out / _shard_name(domains[i], format)))
            shards[i] = ShardWriter(tmp, format)
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
        "kind": MANIFEST_KIND,
        "schema_version": doc["schema_version"],
        "format": format,
        "content": content,
        "columns": columns,
        "mixture": "mixture.json",
        "mixture_sha256": file_sha256(out / "mixture.json"),
        "documents": int(sum(r["documents"] for r in records)),
        "tokens": int(sum(r["tokens"] for r in records)),
        "skipped_documents": int(skipped),
        "written_by": dict(written_by),
        "shards": records,
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def check_shards_target(out_dir, written_by: Mapping, *, overwrite: bool = False) -> Path:
    """Check, before any work, that a materialization may replace ``out_dir``.

    Accepted: a new or empty folder, or the materialization of the same run (another
    mixture of it). Refused unless ``overwrite``: a folder whose ``manifest.json`` is
    another tool's (``gem assign``...), shards of another run (``written_by`` differs),
    or a non-empty folder without a manifest. The folder's parent must be writable.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--materialize {out} is a file, not a folder")
    if out.is_dir() and not overwrite:
        problem = _foreign(out, written_by)
        if problem is not None:
            raise ValueError(
                f"{out} {problem}; a materialization replaces the whole folder: choose a new "
                "or empty folder, or pass --overwrite to replace it"
            )
    check_writable_dir(out.resolve().parent, "the folder that holds the shard folder")
    return out


def _foreign(out: Path, written_by: Mapping) -> str | None:
    """Why ``out`` belongs to another writer (None: it is empty or ours)."""
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return None
    if MANIFEST not in entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        return f"is not empty and holds no shard manifest (it holds {shown})"
    try:
        manifest = read_json(out / MANIFEST, what="shard manifest")
    except ValueError:
        return f"holds an unreadable {MANIFEST}"
    kind = manifest.get("kind", manifest.get("format")) if isinstance(manifest, dict) else None
    if kind != MANIFEST_KIND:
        return f"holds the output of another tool ({MANIFEST} of kind {kind!r})"
    previous = manifest.get("written_by") or {}
    theirs, ours = previous.get("model_sha256"), written_by.get("model_sha256")
    if theirs is not None and ours is not None and theirs != ours:
        return f"holds the shards of another run ({previous.get('run')})"
    return None


def _check_counts(doc: Mapping, shards: dict[int, ShardWriter], skipped: int) -> None:
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
    overwrite: bool = False,
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
    overwrite : bool
        See :func:`check_shards_target`.
    """
    check_shard_options(format, content, batch_size)
    doc = validate_mixture_document(doc)
    folder = Path(getattr(run, "folder", run))
    writer = {"run": str(folder.resolve()), "model_sha256": _model_sha256(folder)}
    check_shards_target(out_dir, {"tool": TOOL, **writer}, overwrite=overwrite)
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
        writer=writer,
        overwrite=overwrite,
    )


def _model_sha256(folder: Path) -> str | None:
    path = folder / MODEL_TENSORS
    return file_sha256(path) if path.is_file() else None
