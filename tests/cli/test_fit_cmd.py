"""`gem fit` / `gem embed` end to end, and the bad inputs they must survive."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import adjusted_mutual_info_score

from gem_app.cli import main
from gem_app.core.gem import GEM
from gem_app.storage.runs import load_run
from tests.conftest import write_jsonl

WORDS = [["kernel", "driver", "module"], ["audio", "music", "player"], ["font", "glyph", "unicode"]]


def planted_corpus(n_per=40, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, d)) * 4
    rows, X, y = [], [], []
    for k in range(3):
        for i in range(n_per):
            words = rng.choice(WORDS[k], size=6)
            rows.append(
                {
                    "id": f"doc-{k}-{i}",
                    "text": " ".join(words),
                    "section": f"s{k}",
                    "tokens": int(rng.integers(5, 50)),
                }
            )
            X.append(centres[k] + rng.normal(size=d))
            y.append(k)
    return rows, np.array(X, dtype=np.float32), np.array(y)


@pytest.fixture
def corpus(tmp_path):
    rows, X, y = planted_corpus()
    rows[5]["text"] = "   "  # rejected: whitespace text
    X[7] = np.nan  # rejected: NaN embedding
    write_jsonl(tmp_path / "c.jsonl", rows)
    np.save(tmp_path / "e.npy", X)
    return tmp_path, rows, X, y


def fit_args(tmp, *extra):
    return [
        "fit",
        str(tmp / "c.jsonl"),
        "--embeddings",
        str(tmp / "e.npy"),
        "--k",
        "3",
        "--label-col",
        "section",
        "--tokens-col",
        "tokens",
        "--out",
        str(tmp / "run"),
        *extra,
    ]


def test_fit_writes_a_complete_run(corpus, capsys):
    tmp, rows, X, y = corpus
    assert main(fit_args(tmp, "--seed", "3")) == 0
    out = capsys.readouterr().out
    assert "K = 3" in out and "kernel" in out

    doc = json.loads((tmp / "run" / "model.json").read_text())
    assert doc["params"]["n_clusters"] == 3 and doc["params"]["random_state"] == 3
    reasons = {r["row"]: r["reason"] for r in doc["metadata"]["rejected_rows"]}
    assert set(reasons) == {5, 7}
    assert "empty" in reasons[5] or "whitespace" in reasons[5]
    assert "NaN" in reasons[7]
    assert len(doc["objective_history"]) >= 3 and len(doc["concentrations"]) == 3

    assignments = pd.read_parquet(tmp / "run" / "assignments.parquet")
    assert list(assignments.columns[:4]) == ["id", "cluster", "probability", "tokens"]
    valid = [r for i, r in enumerate(rows) if i not in (5, 7)]
    assert assignments["id"].tolist() == [r["id"] for r in valid]
    assert assignments["tokens"].tolist() == [r["tokens"] for r in valid]
    truth = np.delete(y, [5, 7])
    assert adjusted_mutual_info_score(truth, assignments["cluster"]) > 0.95

    run = load_run(tmp / "run")
    model = GEM.load(tmp / "run")
    q = model.predict_proba(np.delete(X, [5, 7], axis=0))
    np.testing.assert_array_equal(q.argmax(1), assignments["cluster"])
    np.testing.assert_allclose(q.max(1), assignments["probability"], rtol=1e-6)
    assert run.frame["id"].tolist() == assignments["id"].tolist()


def test_same_seed_same_assignments(corpus):
    tmp, *_ = corpus
    assert main(fit_args(tmp)) == 0
    first = pd.read_parquet(tmp / "run" / "assignments.parquet")
    assert main(fit_args(tmp)) == 0
    pd.testing.assert_frame_equal(first, pd.read_parquet(tmp / "run" / "assignments.parquet"))


def expect_exit_2(capsys, args, message, out_dir=None):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert message.lower() in err.lower(), err
    if out_dir is not None:
        assert not out_dir.exists() or not any(out_dir.iterdir()), "partial output written"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--k", "0"], "--k"),
        (["--k", "500"], "larger than the number of valid rows"),
        (["--balance", "-1"], "balance"),
        (["--temperature", "0"], "temperature"),
    ],
)
def test_bad_parameters_exit_2(corpus, capsys, extra, message):
    tmp, *_ = corpus
    expect_exit_2(capsys, fit_args(tmp, *extra), message, tmp / "run")


def test_bad_files_exit_2(corpus, capsys):
    tmp, rows, X, _ = corpus
    out = tmp / "run"
    (tmp / "empty.jsonl").write_bytes(b"")
    expect_exit_2(
        capsys, ["fit", str(tmp / "empty.jsonl"), "--k", "2", "--out", str(out)], "empty", out
    )

    write_jsonl(tmp / "notext.jsonl", [{"id": 1, "body": "x"}])
    expect_exit_2(
        capsys, ["fit", str(tmp / "notext.jsonl"), "--k", "1", "--out", str(out)], "text", out
    )

    (tmp / "bad.jsonl").write_bytes(b'{"id": 1, "text": "caf\xe9"}\n')
    expect_exit_2(
        capsys, ["fit", str(tmp / "bad.jsonl"), "--k", "1", "--out", str(out)], "utf-8", out
    )

    dup = [dict(r) for r in rows]
    dup[3]["id"] = dup[1]["id"]
    write_jsonl(tmp / "dup.jsonl", dup)
    expect_exit_2(
        capsys,
        [
            "fit",
            str(tmp / "dup.jsonl"),
            "--embeddings",
            str(tmp / "e.npy"),
            "--k",
            "3",
            "--out",
            str(out),
        ],
        "duplicate",
        out,
    )

    np.save(tmp / "short.npy", X[:-1])
    expect_exit_2(
        capsys,
        [
            "fit",
            str(tmp / "c.jsonl"),
            "--embeddings",
            str(tmp / "short.npy"),
            "--k",
            "3",
            "--out",
            str(out),
        ],
        "rows",
        out,
    )

    np.save(tmp / "d1.npy", X[:, :1])
    expect_exit_2(
        capsys,
        [
            "fit",
            str(tmp / "c.jsonl"),
            "--embeddings",
            str(tmp / "d1.npy"),
            "--k",
            "3",
            "--out",
            str(out),
        ],
        "2 dimensions",
        out,
    )

    np.save(tmp / "obj.npy", np.array([{"a": 1}] * len(rows), dtype=object), allow_pickle=True)
    expect_exit_2(
        capsys,
        [
            "fit",
            str(tmp / "c.jsonl"),
            "--embeddings",
            str(tmp / "obj.npy"),
            "--k",
            "3",
            "--out",
            str(out),
        ],
        "object",
        out,
    )

    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp / "c.parquet")
    data = (tmp / "c.parquet").read_bytes()
    (tmp / "trunc.parquet").write_bytes(data[: len(data) // 2])
    expect_exit_2(
        capsys, ["fit", str(tmp / "trunc.parquet"), "--k", "2", "--out", str(out)], "parquet", out
    )


def test_all_zero_embeddings_are_rejected_and_listed(corpus, capsys):
    tmp, rows, X, _ = corpus
    X = X.copy()
    X[[0, 1]] = 0.0
    np.save(tmp / "z.npy", X)
    args = fit_args(tmp)
    args[args.index(str(tmp / "e.npy"))] = str(tmp / "z.npy")
    assert main(args) == 0
    doc = json.loads((tmp / "run" / "model.json").read_text())
    reasons = {r["row"]: r["reason"] for r in doc["metadata"]["rejected_rows"]}
    assert "zero" in reasons[0] and "zero" in reasons[1]


def test_embed_then_fit(tmp_path, capsys):
    rows = [
        {"id": 1, "text": "The Linux kernel driver for network cards."},
        {"id": 2, "text": ""},
        {"id": 3, "text": "A music player for audio files."},
        {"id": 4, "text": "Kernel modules for wireless network devices."},
        {"id": 5, "text": "Play and organise your music collection."},
    ]
    write_jsonl(tmp_path / "small.jsonl", rows)
    assert (
        main(
            [
                "embed",
                str(tmp_path / "small.jsonl"),
                "--out",
                str(tmp_path / "E.npy"),
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    E = np.load(tmp_path / "E.npy", allow_pickle=False)
    assert E.shape == (5, 384) and E.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(E[[0, 2, 3, 4]], axis=1), 1.0, atol=1e-5)
    assert not E[1].any()  # the rejected row is a zero vector, rejected again by fit
    assert (
        main(
            [
                "fit",
                str(tmp_path / "small.jsonl"),
                "--embeddings",
                str(tmp_path / "E.npy"),
                "--k",
                "2",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    labels = pd.read_parquet(tmp_path / "run" / "assignments.parquet").set_index("id")["cluster"]
    assert labels[1] == labels[4] and labels[3] == labels[5] and labels[1] != labels[3]


def test_one_huge_document_is_named_in_a_warning(tmp_path, capsys):
    rows, X, _ = planted_corpus(n_per=8)
    rows[0] = {**rows[0], "id": "big", "tokens": 100_000}
    write_jsonl(tmp_path / "c.jsonl", rows)
    np.save(tmp_path / "e.npy", X)
    assert main(fit_args(tmp_path)) == 0
    err = capsys.readouterr().err
    assert "warning: row 0 (id 'big')" in err
    share = 100_000 / sum(r["tokens"] for r in rows)
    assert f"{100 * share:.1f}% of all tokens" in err
