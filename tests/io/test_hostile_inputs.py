"""Hostile inputs to gem_app.io: clear messages (naming the row, byte or value), no tracebacks.

Byte-swapped and overflowing embeddings, all-zero embeddings, NUL bytes, other encodings,
compressed or truncated files, and one huge document that holds most of the token mass.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json

import numpy as np
import pandas as pd
import pytest

from gem_app.io.corpus import CorpusError, load_corpus
from gem_app.io.corpus_checks import (
    HUGE_DOCUMENT_MEDIAN_RATIO,
    HUGE_DOCUMENT_SHARE,
    CorpusWarning,
    _percent,
    huge_document_warnings,
)
from gem_app.io.embeddings import corpus_embeddings, load_embeddings
from gem_app.io.records import json_error
from gem_app.storage.runs import fit_corpus


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    return path


def _docs(n=6):
    return [{"id": f"d{i}", "text": f"document number {i} about things"} for i in range(n)]


# ----------------------------------------------------------------------------- embeddings
@pytest.mark.parametrize("dtype", [">f2", ">f4", ">f8", "<f4", "=f8"])
def test_byte_swapped_npy_is_accepted_in_native_order(tmp_path, dtype):
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(dtype)
    np.save(tmp_path / "e.npy", x)
    out = load_embeddings(tmp_path / "e.npy")
    assert out.dtype == np.dtype(np.float32) and out.dtype.isnative and out.flags.c_contiguous
    np.testing.assert_array_equal(out, x.astype(np.float64).astype(np.float32))


def test_float64_values_beyond_float32_name_the_row_and_column(tmp_path):
    x = np.ones((4, 3))
    x[2, 1] = -1e300
    np.save(tmp_path / "big.npy", x)
    with pytest.raises(CorpusError, match=r"row 2, column 1: -1e\+300 does not fit in float32"):
        load_embeddings(tmp_path / "big.npy")


@pytest.mark.parametrize("shape", [(10**9, 1000), (50, 4)])
def test_npy_header_claiming_more_data_than_the_file_holds(tmp_path, shape):
    """A lying header must not make numpy allocate terabytes (MemoryError traceback)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    (tmp_path / "liar.npy").write_bytes(buf.getvalue() + b"\0" * 64)
    expected = 4 * shape[0] * shape[1]
    with pytest.raises(CorpusError, match=rf"truncated.*{expected} bytes of data.*holds 64"):
        load_embeddings(tmp_path / "liar.npy")


def test_all_zero_embeddings_say_why_there_is_no_valid_row(tmp_path):
    data = _jsonl(tmp_path / "c.jsonl", _docs(8))
    np.save(tmp_path / "zero.npy", np.zeros((8, 4), np.float32))
    corpus = load_corpus(data)
    with pytest.raises(CorpusError) as info:
        corpus_embeddings(corpus, tmp_path / "zero.npy")
    message = str(info.value)
    assert "zero.npy" in message and "no valid rows" in message
    assert f"all 8 embeddings from {tmp_path / 'zero.npy'} are zero vectors" in message
    assert "rows 0, 1, 2, 3, 4, ... and 3 more); a zero vector" in message
    assert "\n" not in message


def test_unusable_embeddings_of_mixed_kinds_are_summarised(tmp_path):
    data = _jsonl(tmp_path / "c.jsonl", _docs(4))
    x = np.zeros((4, 3), np.float32)
    x[1, 0], x[3, 2] = np.nan, np.inf
    np.save(tmp_path / "bad.npy", x)
    with pytest.raises(
        CorpusError, match=r"all 4 embeddings from .*bad.npy are unusable \(2 x zero vector"
    ) as info:
        corpus_embeddings(load_corpus(data), tmp_path / "bad.npy")
    assert "row 1 (contains NaN)" in str(info.value) and "row 3 (contains Inf)" in str(info.value)


def test_fit_on_all_zero_embeddings_fails_with_the_reason(tmp_path):
    data = _jsonl(tmp_path / "c.jsonl", _docs(6))
    np.save(tmp_path / "zero.npy", np.zeros((6, 4), np.float32))
    with pytest.raises(ValueError, match="zero vectors"):
        fit_corpus(data, tmp_path / "run", n_clusters=2, embeddings=tmp_path / "zero.npy")


def test_some_zero_rows_are_still_rejected_one_by_one(tmp_path):
    data = _jsonl(tmp_path / "c.jsonl", _docs(4))
    x = np.eye(4, dtype=np.float32)
    x[2] = 0
    np.save(tmp_path / "e.npy", x)
    frame, X, rejected = corpus_embeddings(load_corpus(data), tmp_path / "e.npy")
    assert len(frame) == 3 and X.shape == (3, 4)
    assert rejected.to_dict("records") == [
        {"row": 2, "id": "d2", "reason": "embedding zero vector"}
    ]


# ----------------------------------------------------------------------------- text files
def test_json_error_messages_are_readable():
    for line, expected in [
        ('{"text": "a\x00b"}', "raw control character U+0000 inside a string"),
        ('{"text": "tab\there"}', "raw control character U+0009"),
        ('{"text": "trunc', "invalid JSON at column 10: Unterminated string starting here"),
        ("\x00\x00", "invalid JSON at column 1: Expecting value (a NUL byte"),
        ('{"a": 1} x', "invalid JSON at column 10: Extra data"),
    ]:
        with pytest.raises(json.JSONDecodeError) as info:
            json.loads(line)
        message = json_error(info.value, line)
        assert expected in message, (line, message)
        assert " at at " not in message and "starting at at" not in message


def test_nul_bytes_in_jsonl_reject_the_row_with_a_clear_reason(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"text": "a\x00b"}\n\x00\x00\x00\n{"text": "ok"}\n')
    corpus = load_corpus(path)
    reasons = corpus.rejected.set_index("row")["reason"].to_dict()
    assert corpus.frame["text"].tolist() == ["ok"]
    assert "U+0000" in reasons[0] and "NUL byte" in reasons[1]
    assert "escaped NUL" not in reasons[0]
    # an escaped NUL is valid JSON and kept as it is
    _jsonl(path, [{"text": "a\x00b"}])
    assert load_corpus(path).frame["text"].tolist() == ["a\x00b"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@pytest.mark.parametrize(
    "payload, hint",
    [
        ('{"text": "hi"}\n'.encode("utf-16"), "UTF-16"),
        ('{"text": "hi"}\n'.encode("utf-16-be"), None),  # no BOM: NUL bytes, not invalid UTF-8
        ('{"text": "hi"}\n'.encode("utf-32"), "UTF-32"),
        (gzip.compress(b'{"text": "hi"}\n'), "gzip-compressed"),
        (bz2.compress(b'{"text": "hi"}\n'), "bzip2-compressed"),
        (b"PK\x03\x04" + b"\x80" * 40, "zip archive"),
        (b"PAR1\x15\x04\x15\x80\x01", "Parquet file"),
        ('{"text": "café"}\n'.encode("latin-1"), "re-encode it as UTF-8"),
    ],
    ids=["utf16", "utf16-no-bom", "utf32", "gzip", "bzip2", "zip", "parquet", "latin1"],
)
def test_files_that_are_not_utf8_text_say_what_they_are(tmp_path, suffix, payload, hint):
    path = tmp_path / f"c{suffix}"
    path.write_bytes(payload)
    if hint is None:
        with pytest.raises(CorpusError):
            load_corpus(path)
        return
    with pytest.raises(CorpusError, match="not valid UTF-8") as info:
        load_corpus(path)
    assert hint in str(info.value) and "byte offset" in str(info.value)


def test_truncated_csv_names_the_unclosed_quote(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b'text,id\n"ok",1\n"fine, ""quoted""",2\n"trunc')
    with pytest.raises(CorpusError, match="malformed CSV") as info:
        load_corpus(path)
    assert "never closed" in str(info.value) and "truncated" in str(info.value)


def test_huge_lines_are_read(tmp_path):
    big = "word " * 3_000_000  # one 15 MB line
    path = _jsonl(tmp_path / "c.jsonl", [{"id": "big", "text": big}, *_docs(3)])
    corpus = load_corpus(path)
    assert corpus.frame["tokens"].iloc[0] == len(big) // 4
    (tmp_path / "c.csv").write_text("text\n" + big + "\nsmall one\n", "utf-8")
    assert len(load_corpus(tmp_path / "c.csv").frame) == 2


# ----------------------------------------------------------------------------- huge documents
def test_one_huge_document_is_named_with_its_share(tmp_path):
    records = [{"id": "big", "text": "word " * 2_000_000}] + _docs(9)
    corpus = load_corpus(_jsonl(tmp_path / "c.jsonl", records))
    tokens = corpus.frame["tokens"].to_numpy()
    share = tokens[0] / tokens.sum()
    assert share > 0.99
    (warning,) = corpus.warnings
    assert isinstance(warning, CorpusWarning) and warning.kind == "huge_document"
    assert (warning.row, warning.id, warning.tokens) == (0, "big", int(tokens[0]))
    assert warning.share == pytest.approx(share, rel=1e-12)
    assert str(warning) == warning.message
    assert "row 0 (id 'big')" in warning.message and "holds >99.9% of all tokens" in warning.message
    report = corpus.report()
    assert f"Warning: {warning.message}" in report.splitlines()


def test_huge_document_rows_are_file_rows_after_rejections(tmp_path):
    records = [{"text": ""}] + [{"text": f"small document {i}"} for i in range(5)]
    records.append({"text": "word " * 100_000})
    corpus = load_corpus(_jsonl(tmp_path / "c.jsonl", records))
    assert [(w.row, w.id) for w in corpus.warnings] == [(6, 6)]


@pytest.mark.parametrize(
    "tokens, flagged",
    [
        ([10] * 5, []),  # few equal documents: large shares, but none is an outlier
        ([10] * 10 + [500], [10]),
        ([10, 10, 10, 10, 95], []),  # 70% of the tokens but 9.5 x the median
        ([10, 10, 10, 10, 100], [4]),  # 71% and 10 x the median
        ([100] * 100 + [1000], []),  # 10 x the median but 9.1% of the tokens
        ([100] * 80 + [1000], [80]),  # 11.1% of the tokens
        ([10] * 30 + [400, 500], [30, 31]),  # two huge documents, both named
    ],
)
def test_huge_document_rule(tokens, flagged):
    tokens = np.asarray(tokens)
    share, median = tokens / tokens.sum(), np.median(tokens)
    rule = (share > HUGE_DOCUMENT_SHARE) & (tokens >= HUGE_DOCUMENT_MEDIAN_RATIO * median)
    assert np.flatnonzero(rule).tolist() == flagged  # the hand-checked cases follow the rule
    rows = np.arange(len(tokens)) + 100
    warnings = huge_document_warnings(tokens, rows, [f"id{i}" for i in range(len(tokens))])
    assert [(w.row, w.id) for w in warnings] == [(100 + i, f"id{i}") for i in flagged]
    for w in warnings:
        assert w.share == pytest.approx(share[w.row - 100], rel=1e-12)
        assert f"{w.tokens / median:.0f} x the median document" in w.message


@pytest.mark.parametrize(
    "share, shown",
    [(0.5, "50.0%"), (0.12345, "12.3%"), (0.99949, "99.9%"), (0.9996, ">99.9%"), (1.0, "100.0%")],
)
def test_percent(share, shown):
    assert _percent(share) == shown


def test_no_warning_on_a_balanced_corpus(tmp_path):
    frame = pd.DataFrame({"text": [f"doc {i} " * (1 + i % 7) for i in range(200)]})
    frame.to_parquet(tmp_path / "c.parquet")
    corpus = load_corpus(tmp_path / "c.parquet")
    assert corpus.warnings == [] and "Warning" not in corpus.report()
