"""Writing one domain's shard: record batches appended to a Parquet or JSON-lines file.

Batches are buffered to ``_ROW_GROUP_ROWS`` rows per Parquet row group; the writer counts the
documents and tokens it wrote, so that the counts can be checked against the mixture.
"""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["ShardWriter", "check_open_files", "jsonl_text"]

_ROW_GROUP_ROWS = 65536
_RESERVED_FILES = 32


def check_open_files(n_shards: int) -> None:
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


class ShardWriter:
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
            self.handle.write(jsonl_text(table))

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


def jsonl_text(table: pa.Table) -> str:
    frame = table.to_pandas()
    text = frame.to_json(orient="records", lines=True, force_ascii=False)
    return text if text.endswith("\n") else text + "\n"
