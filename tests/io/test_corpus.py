"""Tests for gem_app.io.corpus: corpus loading/validation and embedding matrices."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gem_app.io.corpus import Corpus, CorpusError, load_corpus
from gem_app.io.embeddings import load_embeddings
from gem_app.io.records import estimate_tokens
from gem_app.io.text_files import check_utf8
from tests.conftest import write_jsonl

DOCS = [
    {"id": "d1", "text": "Hello world, this is a document.", "label": "greeting", "n_tok": 7},
    {"id": "d2", "text": "Ünïcödé text — with accents ✓", "label": "unicode", "n_tok": 9},
    {"id": "d3", "text": "Line one\nline two, with a comma", "label": "greeting", "n_tok": 12},
]


def write_format(tmp_path, fmt, records):
    path = tmp_path / f"corpus.{fmt}"
    if fmt == "jsonl":
        return write_jsonl(path, records)
    frame = pd.DataFrame(records)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def reference_tokens(text):
    return max(1, math.ceil(len(text.encode("utf-8")) / 4))


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_round_trip_with_label_and_tokens(tmp_path, fmt):
    path = write_format(tmp_path, fmt, DOCS)
    corpus = load_corpus(path, label_col="label", tokens_col="n_tok")
    assert isinstance(corpus, Corpus)
    assert list(corpus.frame.columns) == ["id", "text", "tokens", "label"]
    assert corpus.frame["id"].tolist() == [d["id"] for d in DOCS]
    assert corpus.frame["text"].tolist() == [d["text"] for d in DOCS]
    assert corpus.frame["label"].tolist() == [d["label"] for d in DOCS]
    assert corpus.frame["tokens"].tolist() == [d["n_tok"] for d in DOCS]
    assert corpus.frame["tokens"].dtype == np.int64
    assert corpus.tokens_estimated is False
    assert corpus.columns == {"text": "text", "id": "id", "label": "label", "tokens": "n_tok"}
    assert corpus.source == str(path)
    np.testing.assert_array_equal(corpus.source_rows, [0, 1, 2])
    assert corpus.source_rows.dtype == np.int64
    assert len(corpus.rejected) == 0
    assert list(corpus.rejected.columns) == ["row", "id", "reason"]
    assert "3 valid rows, 0 rejected" in corpus.report()
    assert (
        f"Tokens: {sum(d['n_tok'] for d in DOCS)} in total, from column 'n_tok'" in corpus.report()
    )


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_no_id_column_gives_row_numbers_and_estimated_tokens(tmp_path, fmt):
    records = [{"body": "", "other": 1}] + [{"body": d["text"], "other": 2} for d in DOCS]
    path = write_format(tmp_path, fmt, records)
    corpus = load_corpus(path, text_col="body")
    assert corpus.frame["id"].tolist() == [1, 2, 3]
    assert corpus.frame["id"].dtype == np.int64
    assert corpus.tokens_estimated is True
    assert corpus.frame["tokens"].tolist() == [reference_tokens(d["text"]) for d in DOCS]
    assert list(corpus.frame.columns) == ["id", "text", "tokens"]
    assert corpus.columns["id"] is None
    assert corpus.rejected.to_dict("records") == [{"row": 0, "id": 0, "reason": "empty text"}]


def test_integer_ids_kept_as_ints(tmp_path):
    records = [{"id": 10 + i, "text": d["text"]} for i, d in enumerate(DOCS)]
    for fmt in ("jsonl", "csv", "parquet"):
        corpus = load_corpus(write_format(tmp_path, fmt, records))
        assert corpus.frame["id"].tolist() == [10, 11, 12], fmt
        assert corpus.frame["id"].dtype == np.int64


def test_csv_ids_that_are_not_canonical_integers_stay_strings(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,text\n007,a b\n7,c d\n", "utf-8")
    assert load_corpus(path).frame["id"].tolist() == ["007", "7"]


def test_jsonl_string_ids_stay_strings(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "1", "text": "a"}, {"id": "2", "text": "b"}])
    assert load_corpus(path).frame["id"].tolist() == ["1", "2"]


def test_ndjson_extension_and_bom(tmp_path):
    path = tmp_path / "c.ndjson"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"text": "first"}\n{"text": "second"}\n')
    assert load_corpus(path).frame["text"].tolist() == ["first", "second"]


# ---------------------------------------------------------------- rejections


def test_every_jsonl_rejection_reason(tmp_path):
    lines = [
        json.dumps({"id": "ok1", "text": "fine text", "tok": 5}),
        json.dumps({"id": "e", "text": "", "tok": 5}),
        json.dumps({"id": "w", "text": " \t\n ", "tok": 5}),
        json.dumps({"id": "n", "text": None, "tok": 5}),
        json.dumps({"id": "i", "text": 42, "tok": 5}),
        json.dumps({"id": "m", "tok": 5}),
        "[1, 2, 3]",
        "{not json",
        "",
        json.dumps({"id": "t0", "text": "x", "tok": 0}),
        json.dumps({"id": "tneg", "text": "x", "tok": -3}),
        json.dumps({"id": "tfrac", "text": "x", "tok": 2.5}),
        json.dumps({"id": "tstr", "text": "x", "tok": "many"}),
        json.dumps({"id": "tnull", "text": "x", "tok": None}),
        json.dumps({"id": "tbool", "text": "x", "tok": True}),
        '{"id": "tnan", "text": "x", "tok": NaN}',
        '{"id": "tinf", "text": "x", "tok": Infinity}',
        json.dumps({"id": "tmiss", "text": "x"}),
        json.dumps({"text": "x", "tok": 3}),
        json.dumps({"id": 1.5, "text": "x", "tok": 3}),
        json.dumps({"id": "ok2", "text": "also fine", "tok": 6.0}),
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    corpus = load_corpus(path, tokens_col="tok")
    assert corpus.frame["id"].tolist() == ["ok1", "ok2"]
    assert corpus.frame["tokens"].tolist() == [5, 6]
    np.testing.assert_array_equal(corpus.source_rows, [0, 20])
    rej = corpus.rejected.set_index("row")
    assert rej.index.tolist() == list(range(1, 20))
    reason = rej["reason"].to_dict()
    assert reason[1] == "empty text"
    assert reason[2] == "whitespace-only text"
    assert "null text" in reason[3]
    assert "not a string" in reason[4] and "int" in reason[4]
    assert "missing text" in reason[5]
    assert reason[6].startswith("not a JSON object") and "list" in reason[6]
    assert reason[7].startswith("not a JSON object") and "invalid JSON" in reason[7]
    assert reason[8] == "blank line"
    for row, shown in [(9, "0"), (10, "-3"), (11, "2.5"), (12, "'many'"), (13, "None"),
                       (14, "True"), (15, "nan"), (16, "inf"), (17, "missing")]:  # fmt: skip
        assert reason[row].startswith("invalid token count"), row
        assert shown in reason[row] and "'tok'" in reason[row], row
    assert reason[18].startswith("missing id")
    assert reason[19].startswith("invalid id 1.5")
    assert rej.loc[1, "id"] == "e" and rej.loc[6, "id"] is None and rej.loc[18, "id"] is None
    report = corpus.report(max_rows=3)
    assert "2 valid rows, 19 rejected" in report
    assert "9 x invalid token count" in report
    assert "row 1 (id 'e'): empty text" in report
    assert "16 more rejected rows" in report


def test_csv_rejections_empty_whitespace_and_tokens(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(
        "id,text,tok\na,good one,3\nb,,3\nc,   ,3\nd,ok,x\ne,ok,-1\nf,fine,4.0\n", "utf-8"
    )
    corpus = load_corpus(path, tokens_col="tok")
    assert corpus.frame["id"].tolist() == ["a", "f"]
    assert corpus.frame["tokens"].tolist() == [3, 4]
    assert corpus.rejected["reason"].str.split(" ").str[0:2].str.join(" ").tolist() == [
        "empty text", "whitespace-only text", "invalid token", "invalid token",
    ]  # fmt: skip


def test_parquet_null_text_and_float_tokens(tmp_path):
    table = pa.table({"text": ["a b", None, "c d", "e f"], "tok": [1.0, 2.0, float("nan"), 3.0]})
    path = tmp_path / "c.parquet"
    pq.write_table(table, path)
    corpus = load_corpus(path, tokens_col="tok")
    assert corpus.frame["id"].tolist() == [0, 3]
    assert corpus.frame["tokens"].tolist() == [1, 3]
    assert "null text" in corpus.rejected["reason"][0]
    assert "invalid token count: nan" in corpus.rejected["reason"][1]


def test_estimate_tokens_matches_bytes_over_four():
    texts = ["", "a", "abcd", "abcde", "é" * 3, "日本語のテキスト", "x" * 401]
    expected = [reference_tokens(t) for t in texts]
    out = estimate_tokens(texts)
    assert out.dtype == np.int64 and out.tolist() == expected
    assert expected[:5] == [1, 1, 1, 2, 2]  # hand-computed: 0, 1, 4, 5, 6 bytes
    with pytest.raises(ValueError, match="text 1"):
        estimate_tokens(["ok", None])


# ---------------------------------------------------------------- fatal errors


def test_fatal_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(tmp_path / "nope.jsonl")
    other = tmp_path / "c.txt"
    other.write_text("hello")
    with pytest.raises(CorpusError, match=r"unknown corpus extension '\.txt'"):
        load_corpus(other)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_fatal_zero_byte_file(tmp_path, fmt):
    path = tmp_path / f"c.{fmt}"
    path.write_bytes(b"")
    with pytest.raises(CorpusError, match="empty"):
        load_corpus(path)


def test_fatal_no_rows(tmp_path):
    (tmp_path / "a.csv").write_text("id,text\n", "utf-8")
    (tmp_path / "b.jsonl").write_text("\n  \n", "utf-8")
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "c.parquet")
    for name in ("a.csv", "b.jsonl", "c.parquet"):
        with pytest.raises(CorpusError, match="no rows"):
            load_corpus(tmp_path / name)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_fatal_text_column_missing_lists_columns(tmp_path, fmt):
    path = write_format(tmp_path, fmt, [{"body": "a", "id": 1}])
    with pytest.raises(
        CorpusError, match=r"text column 'text' not found; columns are: 'body', 'id'"
    ):
        load_corpus(path)


@pytest.mark.parametrize("role", ["id", "label", "tokens"])
def test_fatal_mapped_column_missing(tmp_path, role):
    path = write_format(tmp_path, "parquet", [{"text": "a", "id": 1}])
    with pytest.raises(CorpusError, match=rf"{role} column 'nope' not found"):
        load_corpus(path, **{f"{role}_col": "nope"})


def test_fatal_non_utf8_names_line_and_offset(tmp_path):
    good = b'{"text": "ok"}\n'
    (tmp_path / "c.jsonl").write_bytes(good + good + b'{"text": "bad \xff"}\n')
    with pytest.raises(CorpusError, match=rf"line 3, byte offset {2 * len(good) + 14}"):
        load_corpus(tmp_path / "c.jsonl")
    csv_bytes = b"id,text\n1,caf\xc3\xa9\n2,na\xefve\n"
    (tmp_path / "c.csv").write_bytes(csv_bytes)
    bad_offset = csv_bytes.index(b"\xef")
    with pytest.raises(CorpusError, match=rf"line 3, byte offset {bad_offset}"):
        load_corpus(tmp_path / "c.csv")


def test_non_utf8_check_across_chunk_boundary(tmp_path):
    path = tmp_path / "c.csv"
    # a valid 2-byte character split by the chunk boundary is fine ...
    path.write_bytes(b"text\n" + b"a" * 10 + "é".encode() + b"\nzz\n")
    for chunk in (3, 4, 16, 17):
        check_utf8(path, chunk_size=chunk)
    # ... an invalid byte after it is found at its true offset and line
    data = b"text\n" + b"a" * 10 + "é".encode() + b"\nz\x80\n"
    path.write_bytes(data)
    bad_offset = data.index(b"\x80")
    for chunk in (3, 16, 1 << 20):
        with pytest.raises(ValueError, match=rf"line 3, byte offset {bad_offset}"):
            check_utf8(path, chunk_size=chunk)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_fatal_duplicate_ids_name_id_and_rows(tmp_path, fmt):
    records = [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}]
    path = write_format(tmp_path, fmt, records)
    with pytest.raises(CorpusError, match=r"duplicate id 'a' in rows 0 and 2"):
        load_corpus(path)


def test_fatal_corrupt_parquet(tmp_path):
    path = write_format(tmp_path, "parquet", DOCS)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorpusError, match="truncated or corrupt Parquet"):
        load_corpus(path)
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(CorpusError, match="truncated or corrupt Parquet"):
        load_corpus(path)


def test_fatal_every_row_rejected_summarises(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": ""}\n{"text": "  "}\n{"text": ""}\n[1]\n', "utf-8")
    with pytest.raises(CorpusError, match=r"all 4 rows rejected \(2 x empty text") as info:
        load_corpus(path)
    assert "1 x whitespace-only text" in str(info.value)
    assert "1 x not a JSON object" in str(info.value)
    assert "\n" not in str(info.value)
    (tmp_path / "d.jsonl").write_text("nope\n[2]\n", "utf-8")
    with pytest.raises(CorpusError, match="all 2 rows rejected"):
        load_corpus(tmp_path / "d.jsonl")


def test_fatal_malformed_csv(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,text\n1,a\n2,b,extra,fields\n", "utf-8")
    with pytest.raises(CorpusError, match="malformed CSV"):
        load_corpus(path)


def test_corpus_error_is_value_error():
    assert issubclass(CorpusError, ValueError)


# ---------------------------------------------------------------- embeddings


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_embeddings_from_npy(tmp_path, dtype):
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(dtype)
    x[1] = 0.0  # zero rows are the caller's business
    np.save(tmp_path / "e.npy", x)
    out = load_embeddings(tmp_path / "e.npy")
    assert out.dtype == np.float32 and out.shape == (5, 3)
    np.testing.assert_array_equal(out, x.astype(np.float32))


def test_npy_object_array_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(CorpusError, match="object array"):
        load_embeddings(tmp_path / "o.npy")


def test_npy_wrong_shape_dtype_and_corrupt(tmp_path):
    np.save(tmp_path / "v.npy", np.ones(4))
    with pytest.raises(CorpusError, match="2-D"):
        load_embeddings(tmp_path / "v.npy")
    np.save(tmp_path / "i.npy", np.ones((2, 2), dtype=np.int32))
    with pytest.raises(CorpusError, match="int32"):
        load_embeddings(tmp_path / "i.npy")
    x = np.ones((50, 4))
    np.save(tmp_path / "t.npy", x)
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[: len(data) - 100])  # truncated data block
    with pytest.raises(CorpusError, match=r"truncated \.npy file.* 1600 bytes of data.* 1500"):
        load_embeddings(tmp_path / "t.npy")
    (tmp_path / "c.npy").write_bytes(b"garbage")
    with pytest.raises(CorpusError, match="not a valid .npy"):
        load_embeddings(tmp_path / "c.npy")
    with pytest.raises(CorpusError, match="not found"):
        load_embeddings(tmp_path / "missing.npy")
    with pytest.raises(CorpusError, match="unknown embeddings extension"):
        load_embeddings(tmp_path / "e.csv")


def test_embeddings_from_parquet_list_and_fixed_size_list(tmp_path):
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    rows = [r.tolist() for r in x]
    table = pa.table(
        {
            "doc": list("abcdef"),
            "emb": pa.array(rows, type=pa.list_(pa.float32())),
            "fixed": pa.array(rows, type=pa.list_(pa.float64(), 4)),
        }
    )
    path = tmp_path / "e.parquet"
    pq.write_table(table, path, row_group_size=4)  # two row groups -> chunked arrays
    np.testing.assert_allclose(load_embeddings(path, column="emb"), x)
    out = load_embeddings(path, column="fixed")
    assert out.dtype == np.float32 and out.shape == (6, 4)
    np.testing.assert_allclose(out, x)
    with pytest.raises(CorpusError, match=r"exactly one list column.*\['emb', 'fixed'\]"):
        load_embeddings(path)
    with pytest.raises(CorpusError, match="not a list"):
        load_embeddings(path, column="doc")
    with pytest.raises(CorpusError, match="'zzz' not found"):
        load_embeddings(path, column="zzz")
    only = tmp_path / "only.parquet"
    pq.write_table(table.select(["doc", "fixed"]), only)
    np.testing.assert_allclose(load_embeddings(only), x)


def test_parquet_ragged_and_null_rows_named(tmp_path):
    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"emb": [[1.0, 2.0], [3.0, 4.0], [5.0], [6.0, 7.0]]}), path)
    with pytest.raises(CorpusError, match="row 2 has 1 values, row 0 has 2"):
        load_embeddings(path)
    pq.write_table(pa.table({"emb": [[1.0, 2.0], None]}), path)
    with pytest.raises(CorpusError, match="null at row 1"):
        load_embeddings(path)
    pq.write_table(pa.table({"emb": [["a"], ["b"]]}), path)
    with pytest.raises(CorpusError, match="not floats"):
        load_embeddings(path)
