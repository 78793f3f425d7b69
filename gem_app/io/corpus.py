"""Load a document corpus (JSONL, CSV, Parquet) and validate it.

Bad rows (empty texts, invalid token counts, malformed JSONL lines) are kept aside
in ``Corpus.rejected`` with a reason; problems with the file as a whole raise
:class:`CorpusError` with a one-line message naming the file, row, column or value.
Valid rows that would still mislead a fit (one document holding most of the tokens) are
kept and named in ``Corpus.warnings`` (:mod:`gem_app.io.corpus_checks`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gem_app.io.corpus_checks import CorpusWarning, huge_document_warnings
from gem_app.io.records import (
    INT64_MAX,
    INT_TEXT,
    MISSING,
    estimate_tokens,
    id_problem,
    json_error,
    parse_token_count,
    text_problem,
)
from gem_app.io.text_files import check_utf8, not_utf8_message

JSONL_SUFFIXES = (".jsonl", ".ndjson")
CORPUS_SUFFIXES = (*JSONL_SUFFIXES, ".csv", ".parquet")


class CorpusError(ValueError):
    """A fatal problem with an input file (missing, empty, corrupt, wrong columns, ...)."""


@dataclass
class Corpus:
    """A validated corpus.

    Attributes
    ----------
    frame : pandas.DataFrame, shape (n_valid, 3 or 4)
        Valid rows in file order; columns ``id``, ``text``, ``tokens`` (int64 >= 1) and
        ``label`` when a label column was mapped.
    rejected : pandas.DataFrame, shape (n_rejected, 3)
        Columns ``row`` (0-based row number in the file), ``id`` (None when unknown), ``reason``.
    source_rows : numpy.ndarray of int64, shape (n_valid,)
        File row number of each valid row.
    source : str
        The path that was read.
    columns : dict
        The mapping used: ``{"text": ..., "id": ..., "label": ..., "tokens": ...}``
        (None for a role with no column).
    tokens_estimated : bool
        True when token counts come from :func:`estimate_tokens`.
    warnings : list of CorpusWarning
        Valid rows that may mislead a fit, in row order (one document holding a large share
        of all tokens); ``str(w)`` is a one-line message naming the row, id and share.
    """

    frame: pd.DataFrame
    rejected: pd.DataFrame
    source_rows: np.ndarray
    source: str
    columns: dict
    tokens_estimated: bool
    warnings: list[CorpusWarning] = field(default_factory=list)

    def report(self, max_rows: int = 20) -> str:
        """Return a human-readable validation report (at most ``max_rows`` rejected rows listed)."""
        n_valid, n_rejected = len(self.frame), len(self.rejected)
        how = (
            "estimated from UTF-8 bytes / 4"
            if self.tokens_estimated
            else (f"from column {self.columns['tokens']!r}")
        )
        lines = [
            f"Corpus {self.source}: {n_valid} valid rows, {n_rejected} rejected "
            f"({n_valid + n_rejected} rows read).",
            f"Columns: text={self.columns['text']!r}, id={self.columns['id']!r}, "
            f"label={self.columns['label']!r}, tokens={self.columns['tokens']!r}.",
            f"Tokens: {int(self.frame['tokens'].sum())} in total, {how}.",
        ]
        if n_rejected:
            lines.append(
                "Rejections by reason: " + _summarise_reasons(self.rejected["reason"]) + "."
            )
            for rec in self.rejected.head(max_rows).itertuples(index=False):
                id_part = "" if rec.id is None else f" (id {rec.id!r})"
                lines.append(f"  row {rec.row}{id_part}: {rec.reason}")
            if n_rejected > max_rows:
                lines.append(f"  ... and {n_rejected - max_rows} more rejected rows.")
        lines += [f"Warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def load_corpus(path, *, text_col="text", id_col="id", label_col=None, tokens_col=None) -> Corpus:
    """Read and validate a corpus file (format chosen by extension).

    Parameters
    ----------
    path : str or os.PathLike
        A ``.jsonl`` / ``.ndjson`` (one JSON object per line), ``.csv`` or ``.parquet`` file.
    text_col : str
        Column holding the document text; required.
    id_col : str or None
        Column holding document ids (strings or integers, kept as given). When it is None,
        or the default ``"id"`` is absent from the file, ids are the 0-based file row numbers.
        Any other name that is absent is an error.
    label_col, tokens_col : str or None
        Optional columns with a human label and a token count per document. Without a
        token column, counts are estimated with :func:`estimate_tokens`.

    Returns
    -------
    Corpus

    Raises
    ------
    CorpusError
        Missing, empty, non-UTF-8 or corrupt file; unknown extension; a mapped column
        missing; duplicate ids; or no valid row at all.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CORPUS_SUFFIXES:
        raise CorpusError(
            f"{path}: unknown corpus extension {path.suffix!r} (expected one of {', '.join(CORPUS_SUFFIXES)})"
        )
    check_nonempty_file(path)
    if suffix in JSONL_SUFFIXES:
        columns, n_rows, get, pre_rejected = _read_jsonl(path)
    elif suffix == ".csv":
        columns, n_rows, get, pre_rejected = _read_csv(path)
    else:
        columns, n_rows, get, pre_rejected = _read_parquet(
            path, [c for c in (text_col, id_col, label_col, tokens_col) if c is not None]
        )
    if n_rows == 0:
        raise CorpusError(f"{path}: the file has no rows")
    if not columns and len(pre_rejected) == n_rows:
        _raise_all_rejected(path, n_rows, list(pre_rejected.values()))
    _check_columns(path, columns, text_col, id_col, label_col, tokens_col)
    if id_col is not None and id_col not in columns:
        id_col = None
    mapping = {"text": text_col, "id": id_col, "label": label_col, "tokens": tokens_col}
    values = {role: (None if col is None else get(col)) for role, col in mapping.items()}
    if suffix == ".csv":  # CSV cells are all text: "12" is the integer id/label 12
        for role in ("id", "label"):
            if values[role] is not None:
                values[role] = _maybe_int_column(values[role])
    return _validate(path, n_rows, values, pre_rejected, mapping)


def check_nonempty_file(path: Path) -> None:
    if not path.exists():
        raise CorpusError(f"{path}: file not found")
    if not path.is_file():
        raise CorpusError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise CorpusError(f"{path}: the file is empty (0 bytes)")


def _check_columns(path, columns, text_col, id_col, label_col, tokens_col) -> None:
    existing = ", ".join(repr(c) for c in columns) or "none"
    if text_col not in columns:
        raise CorpusError(f"{path}: text column {text_col!r} not found; columns are: {existing}")
    for role, col in (("label", label_col), ("tokens", tokens_col)):
        if col is not None and col not in columns:
            raise CorpusError(f"{path}: {role} column {col!r} not found; columns are: {existing}")
    if id_col is not None and id_col != "id" and id_col not in columns:
        raise CorpusError(f"{path}: id column {id_col!r} not found; columns are: {existing}")


def _read_jsonl(path: Path):
    """Return (columns, n_rows, column getter, {row: reason}) for a JSON-lines file."""
    records: list = []
    rejected: dict[int, str] = {}
    columns: dict[str, None] = {}
    offset = 0
    with open(path, "rb") as fh:
        for row, raw in enumerate(fh):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CorpusError(
                    not_utf8_message(path, row + 1, offset + exc.start, raw[exc.start])
                ) from None
            offset += len(raw)
            if row == 0:
                line = line.removeprefix("\ufeff")
            record, reason = _parse_json_object(line)
            records.append(record)
            if reason is not None:
                rejected[row] = reason
            else:
                columns.update(dict.fromkeys(record))
    if all(reason == "blank line" for reason in rejected.values()) and not columns:
        return [], 0, None, {}  # nothing but blank lines: an empty file

    def get(col):
        return [MISSING if rec is None else rec.get(col, MISSING) for rec in records]

    return list(columns), len(records), get, rejected


def _parse_json_object(line: str):
    if not line.strip():
        return None, "blank line"
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"not a JSON object: {json_error(exc, line)}"
    if not isinstance(obj, dict):
        return None, f"not a JSON object: found a JSON {type(obj).__name__}"
    return obj, None


def _read_csv(path: Path):
    try:
        check_utf8(path)
    except ValueError as exc:
        raise CorpusError(str(exc)) from None
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8"
        )
    except pd.errors.EmptyDataError:
        raise CorpusError(f"{path}: the file has no header and no rows") from None
    except (pd.errors.ParserError, ValueError) as exc:
        message = " ".join(str(exc).split())
        if "EOF inside string" in message:
            message = (
                "a quoted field is never closed before the end of the file (a truncated file "
                f"or a stray quote): {message}"
            )
        raise CorpusError(f"{path}: malformed CSV: {message}") from None

    def get(col):
        return [None if isinstance(v, float) else v for v in frame[col].tolist()]

    return [str(c) for c in frame.columns], len(frame), get, {}


def _read_parquet(path: Path, wanted: list[str]):
    try:
        names = pq.read_schema(path).names
        table = pq.read_table(path, columns=[c for c in dict.fromkeys(wanted) if c in names])
    except (pa.ArrowException, OSError) as exc:
        message = " ".join(str(exc).split())
        raise CorpusError(f"{path}: truncated or corrupt Parquet file ({message})") from None

    def get(col):
        return table.column(col).to_pylist()

    return names, table.num_rows, get, {}


def _validate(path, n_rows, values, pre_rejected, mapping) -> Corpus:
    texts, ids, labels, tokens = (values[k] for k in ("text", "id", "label", "tokens"))
    keep, kept_ids, kept_tokens = [], [], []
    rejected: list[tuple] = []  # (row, id or None, reason)
    seen: dict = {}
    for row in range(n_rows):
        if row in pre_rejected:
            rejected.append((row, None, pre_rejected[row]))
            continue
        doc_id, reason = row, None
        if ids is not None:
            doc_id = ids[row]
            reason = id_problem(doc_id, mapping["id"])
            if reason is None:
                if doc_id in seen:
                    raise CorpusError(
                        f"{path}: duplicate id {doc_id!r} in rows {seen[doc_id]} and {row} "
                        f"(column {mapping['id']!r})"
                    )
                seen[doc_id] = row
            else:
                doc_id = None
        reason = reason or text_problem(texts[row], mapping["text"])
        count = None
        if reason is None and tokens is not None:
            count, reason = parse_token_count(tokens[row], mapping["tokens"])
        if reason is not None:
            rejected.append((row, doc_id, reason))
            continue
        keep.append(row)
        kept_ids.append(doc_id)
        kept_tokens.append(count)
    if not keep:
        _raise_all_rejected(path, n_rows, [reason for _, _, reason in rejected])

    kept_texts = [texts[r] for r in keep]
    if tokens is None:
        token_counts = estimate_tokens(kept_texts)
    else:
        token_counts = np.asarray(kept_tokens, dtype=np.int64)
    data = {"id": _id_series(kept_ids), "text": kept_texts, "tokens": token_counts}
    if labels is not None:
        data["label"] = [None if labels[r] is MISSING else labels[r] for r in keep]
    frame = pd.DataFrame(data)
    warnings = huge_document_warnings(token_counts, keep, kept_ids)
    rows, rejected_ids, reasons = zip(*rejected, strict=True) if rejected else ((), (), ())
    rejected_frame = pd.DataFrame(
        {
            "row": np.asarray(rows, dtype=np.int64),
            "id": pd.Series(list(rejected_ids), dtype=object),
            "reason": pd.Series(list(reasons), dtype=object),
        }
    )
    return Corpus(
        frame=frame,
        rejected=rejected_frame,
        source_rows=np.asarray(keep, dtype=np.int64),
        source=str(path),
        columns=dict(mapping),
        tokens_estimated=tokens is None,
        warnings=warnings,
    )


def _id_series(ids: list) -> pd.Series:
    if all(isinstance(v, int) and -INT64_MAX <= v <= INT64_MAX for v in ids):
        return pd.Series(ids, dtype=np.int64)
    return pd.Series(ids, dtype=object)


def _maybe_int_column(values: list) -> list:
    """Turn canonical integer strings ("12", not "012") into ints when every value is one."""
    if values and all(isinstance(v, str) and INT_TEXT.fullmatch(v) for v in values):
        as_int = [int(v) for v in values]
        if all(str(i) == v for i, v in zip(as_int, values, strict=True)):
            return as_int
    return values


def _summarise_reasons(reasons) -> str:
    counts = Counter(str(r).split(":")[0].split(" (")[0] for r in reasons)
    return ", ".join(f"{n} x {kind}" for kind, n in counts.most_common())


def _raise_all_rejected(path, n_rows, reasons) -> None:
    raise CorpusError(
        f"{path}: no valid rows; all {n_rows} rows rejected ({_summarise_reasons(reasons)})"
    )
