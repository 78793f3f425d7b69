"""Streaming assignment: one output row per input row, bad inputs, resume, engines, CLI."""

from __future__ import annotations

import json
import os
import queue
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gem_app.scale.assign
from gem_app.cli import main
from gem_app.core.gem import GEM
from gem_app.scale.assign import LOCK, MANIFEST, assign
from gem_app.scale.cascade import confidence
from gem_app.scale.inputs import find_shards, shard_stem
from gem_app.scale.local_engine import WORKERS_LOCK, _collect
from gem_app.scale.student import Student
from gem_app.scale.student_files import STUDENT_JSON
from gem_app.utils.files import folder_lock

TOPICS = {
    0: "kernel driver module linux device firmware hardware usb",
    1: "python library package module import numpy data",
    2: "font typeface glyph truetype opentype unicode script",
    3: "game player level arcade puzzle score graphics",
}


def synthetic_texts(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(TOPICS), size=n)
    texts = []
    for k in labels:
        words = TOPICS[int(k)].split()
        texts.append(" ".join(rng.choice(words, size=12)) + f" item{rng.integers(1000)}")
    return texts, labels


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    texts, labels = synthetic_texts(200, 0)
    q = np.full((len(texts), len(TOPICS)), 0.02)
    q[np.arange(len(texts)), labels] = 1 - 0.02 * (len(TOPICS) - 1)
    student = Student(
        n_buckets=2**10, hidden=8, static_vectors=False, epochs=4, batch_size=64, random_state=0
    ).fit(texts, q)
    folder = tmp_path_factory.mktemp("student")
    student.save(folder)
    return folder


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 8))
    X = np.repeat(centres, 40, axis=0) + 0.3 * rng.normal(size=(120, 8))
    model = GEM(3, random_state=0).fit(X.astype(np.float32))
    folder = tmp_path_factory.mktemp("teacher")
    model.save(folder)
    return folder, model, rng


def write_shards(folder, n_shards=3, rows=30, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    texts, _ = synthetic_texts(n_shards * rows, seed)
    for s in range(n_shards):
        part = texts[s * rows : (s + 1) * rows]
        ids = [f"s{s}-{i}" for i in range(rows)]
        if s % 2 == 0:
            pq.write_table(pa.table({"id": ids, "text": part}), folder / f"shard{s}.parquet")
        else:
            with open(folder / f"shard{s}.jsonl", "w", encoding="utf-8") as fh:
                for i, t in zip(ids, part, strict=True):
                    fh.write(json.dumps({"id": i, "text": t}) + "\n")
    return folder


def read_all(out_dir):
    return {p.stem: pq.read_table(p) for p in sorted(out_dir.glob("*.parquet"))}


def test_every_row_once_with_top3(student_dir, tmp_path):
    inputs = write_shards(tmp_path / "in")
    result = assign(student_dir, inputs, tmp_path / "out", workers=1, batch_size=7)
    assert result.failed == []
    tables = read_all(tmp_path / "out")
    assert sorted(tables) == ["shard0", "shard1", "shard2"]
    student = Student.load(student_dir)
    for stem, table in tables.items():
        frame = table.to_pandas()
        s = int(stem[-1])
        assert frame["id"].tolist() == [f"s{s}-{i}" for i in range(30)]
        assert frame["row"].tolist() == list(range(30))
        texts, _ = synthetic_texts(90, 0)
        q = student.predict_proba(texts[s * 30 : (s + 1) * 30])
        np.testing.assert_array_equal(frame["cluster"], q.argmax(1))
        np.testing.assert_allclose(frame["probability"], q.max(1), rtol=1e-6)
        top = np.stack(frame["top3_clusters"].to_numpy())
        np.testing.assert_array_equal(top, np.argsort(-q, axis=1, kind="stable")[:, :3])
        probs = np.stack(frame["top3_probabilities"].to_numpy())
        assert (np.diff(probs, axis=1) <= 0).all()
        assert (frame["status"] == "ok").all()
        # estimated tokens: ceil(UTF-8 bytes / 4)
        expected = [-(-len(t.encode()) // 4) for t in texts[s * 30 : (s + 1) * 30]]
        assert frame["tokens"].tolist() == expected
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert {k: v["rows"] for k, v in manifest["shards"].items()} == dict.fromkeys(tables, 30)


def test_bad_inputs_each_reported(student_dir, tmp_path):
    inputs = write_shards(tmp_path / "in", n_shards=2)
    (tmp_path / "in" / "empty.jsonl").write_bytes(b"")
    pq.write_table(
        pa.table({"id": ["a"], "body": ["no text column"]}), tmp_path / "in" / "notext.parquet"
    )
    (tmp_path / "in" / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    with open(tmp_path / "in" / "mixed.jsonl", "wb") as fh:
        fh.write(b'{"id": "ok1", "text": "kernel driver usb"}\n')
        fh.write(b'{"id": "latin1", "text": "caf\xe9 font"}\n')  # not UTF-8
        fh.write(b'{"id": "notext"}\n')
        fh.write(b"{broken json\n")
        fh.write(b'{"id": "empty", "text": "   "}\n')
        fh.write(b"\n")  # a blank line is not a row
        fh.write(b'{"id": "ok2", "text": "python numpy import"}\n')
    result = assign(student_dir, inputs, tmp_path / "out", workers=1)
    assert sorted(result.failed) == ["corrupt", "notext"]
    shards = result.manifest["shards"]
    assert "corrupt.parquet" in shards["corrupt"]["error"]
    assert "notext.parquet" in shards["notext"]["error"] and "'text'" in shards["notext"]["error"]
    assert not (tmp_path / "out" / "corrupt.parquet").exists()
    assert shards["empty"]["status"] == "done" and shards["empty"]["rows"] == 0
    assert pq.read_table(tmp_path / "out" / "empty.parquet").num_rows == 0
    mixed = pd.read_parquet(tmp_path / "out" / "mixed.parquet")
    assert mixed["row"].tolist() == [0, 1, 2, 3, 4, 6]
    assert mixed["status"].tolist() == ["ok", "rejected", "rejected", "rejected", "rejected", "ok"]
    reasons = mixed["reason"].tolist()
    assert "UTF-8" in reasons[1] and "line 2" in reasons[1]
    assert "missing text" in reasons[2] and "malformed JSON" in reasons[3]
    assert "whitespace" in reasons[4]
    assert (
        mixed["id"].tolist()[2] == "notext" and mixed["cluster"].isna().tolist()[1:5] == [True] * 4
    )
    assert shards["mixed"]["rejected"] == 4
    for name in ("shard0", "shard1"):
        assert shards[name]["status"] == "done"
    assert "FAILED corrupt" in result.summary()


def test_resume_after_kill_equals_uninterrupted(student_dir, tmp_path):
    inputs = write_shards(tmp_path / "in", n_shards=4)
    reference = assign(student_dir, inputs, tmp_path / "ref", workers=1, batch_size=8)
    assert reference.failed == []

    calls = {"n": 0}

    def kill_in_third_shard(n_rows):
        calls["n"] += n_rows
        if calls["n"] > 70:  # two shards (60 rows) done, the third one half-written
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        assign(student_dir, inputs, out, workers=1, batch_size=8, progress=kill_in_third_shard)
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["shards"]) == ["shard0", "shard1"]
    (out / ".shard2.parquet.killed.tmp").write_bytes(b"half a file")  # as a kill -9 leaves it
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    resumed = assign(student_dir, inputs, out, workers=1, batch_size=8)
    assert [shard_stem(p) for p in resumed.skipped] == ["shard0", "shard1"]
    assert [shard_stem(p) for p in resumed.ran] == ["shard2", "shard3"]
    assert not list(out.glob(".*.tmp"))
    for name, mtime in before.items():
        assert (out / name).stat().st_mtime_ns == mtime  # finished shards untouched
    for stem in ("shard0", "shard1", "shard2", "shard3"):
        assert (out / f"{stem}.parquet").read_bytes() == (
            tmp_path / "ref" / f"{stem}.parquet"
        ).read_bytes()

    # a changed input shard is redone (its checksum differs); the others are skipped
    write_shards(tmp_path / "in", n_shards=1, seed=5)
    again = assign(student_dir, inputs, out, workers=1, batch_size=8)
    assert [shard_stem(p) for p in again.ran] == ["shard0"]


def test_two_processes_equal_one(student_dir, tmp_path):
    inputs = write_shards(tmp_path / "in", n_shards=3)
    assign(student_dir, inputs, tmp_path / "one", workers=1, batch_size=16)
    progressed = []
    assign(
        student_dir, inputs, tmp_path / "two", workers=2, batch_size=16, progress=progressed.append
    )
    assert sum(progressed) == 90
    for stem in ("shard0", "shard1", "shard2"):
        a = (tmp_path / "one" / f"{stem}.parquet").read_bytes()
        assert a == (tmp_path / "two" / f"{stem}.parquet").read_bytes()


def test_teacher_with_embeddings_column_and_cascade(student_dir, teacher_dir, tmp_path):
    folder, model, rng = teacher_dir
    X = rng.normal(size=(25, 8)).astype(np.float32)
    texts, _ = synthetic_texts(25, 3)
    X[4] = 0.0  # a zero embedding is rejected
    (tmp_path / "in").mkdir()
    pq.write_table(
        pa.table({"id": [str(i) for i in range(25)], "text": texts, "emb": X.tolist()}),
        tmp_path / "in" / "e.parquet",
    )
    result = assign(folder, tmp_path / "in", tmp_path / "t", workers=1, embeddings_col="emb")
    frame = pd.read_parquet(tmp_path / "t" / "e.parquet")
    good = np.arange(25) != 4
    np.testing.assert_array_equal(frame["cluster"][good].astype(int), model.predict(X[good]))
    assert frame["status"][4] == "rejected" and "embedding" in frame["reason"][4]
    assert result.manifest["shards"]["e"]["rejected"] == 1
    assert set(frame["assigned_by"].dropna()) == {"teacher"}

    # the cascade needs the same K: a 4-cluster student and a 3-cluster teacher disagree
    with pytest.raises(ValueError, match="K = 4.*K = 3"):
        assign(student_dir, tmp_path / "in", tmp_path / "c", teacher=folder, embeddings_col="emb")


def test_cascade_routes_low_confidence_to_teacher(teacher_dir, tmp_path):
    folder, model, rng = teacher_dir
    X = rng.normal(size=(60, 8)).astype(np.float32)
    texts, _ = synthetic_texts(60, 4)
    q = model.predict_proba(X.astype(np.float64))
    student = Student(n_buckets=2**10, hidden=0, static_vectors=False, epochs=3, random_state=0)
    student.fit(texts, q).save(tmp_path / "st")
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"text": texts, "emb": X.tolist()}), tmp_path / "in" / "c.parquet")
    p = student.predict_proba(texts)
    assert student.routing_ == "margin"  # the default: the threshold is on the margin
    margin = confidence(p, "margin")
    threshold = float(np.median(margin))
    assign(
        tmp_path / "st",
        tmp_path / "in",
        tmp_path / "out",
        teacher=folder,
        threshold=threshold,
        embeddings_col="emb",
        workers=1,
    )
    frame = pd.read_parquet(tmp_path / "out" / "c.parquet")
    routed = margin < threshold
    assert 0 < routed.sum() < 60 and (routed != (p.max(1) < threshold)).any()
    assert (frame["assigned_by"] == np.where(routed, "teacher", "student")).all()
    expected = np.where(routed, q.argmax(1), p.argmax(1))
    np.testing.assert_array_equal(frame["cluster"].astype(int), expected)
    assert frame["id"].isna().all()  # no id column: ids are null, rows identify documents


def test_model_of_another_version_and_unwritable_output(student_dir, tmp_path):
    inputs = write_shards(tmp_path / "in", n_shards=1)
    old = tmp_path / "old"
    shutil.copytree(student_dir, old)
    doc = json.loads((old / STUDENT_JSON).read_text())
    doc["format_version"] = 99
    (old / STUDENT_JSON).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="format_version 99.*format_version 1"):
        assign(old, inputs, tmp_path / "out")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        assign(student_dir, inputs, blocker / "out")
    with pytest.raises(ValueError, match="no input shards"):
        find_shards(tmp_path / "nothing-*.jsonl")


def test_cli_exit_codes_and_summary(student_dir, tmp_path, capsys):
    inputs = write_shards(tmp_path / "in", n_shards=2)
    out = tmp_path / "out"
    assert (
        main(
            [
                "assign",
                str(student_dir),
                "--input",
                str(inputs / "*"),
                "--out",
                str(out),
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert "2 run, 0 already done" in capsys.readouterr().out
    (inputs / "bad.parquet").write_bytes(b"garbage")
    assert (
        main(
            [
                "assign",
                str(student_dir),
                "--input",
                str(inputs),
                "--out",
                str(out),
                "--workers",
                "1",
            ]
        )
        == 1
    )
    printed = capsys.readouterr().out
    assert "2 already done" in printed and "FAILED bad" in printed
    assert (
        main(["assign", str(tmp_path / "missing"), "--input", str(inputs), "--out", str(out)]) == 2
    )
    assert "model folder not found" in capsys.readouterr().err


# ----------------------------------------------------------------------------- one writer per folder
def test_another_model_into_an_existing_output_is_refused_unless_overwrite(
    student_dir, teacher_dir, tmp_path
):
    inputs = write_shards(tmp_path / "in", n_shards=3)
    out = tmp_path / "out"
    assign(student_dir, inputs, out, workers=1)
    before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    other = tmp_path / "other-student"
    texts, labels = synthetic_texts(200, 9)
    q = np.full((len(texts), len(TOPICS)), 0.02)
    q[np.arange(len(texts)), labels] = 1 - 0.02 * (len(TOPICS) - 1)
    Student(n_buckets=2**10, hidden=0, static_vectors=False, epochs=2, random_state=1).fit(
        texts, q
    ).save(other)
    only_one = [p for p in find_shards(inputs) if shard_stem(p) == "shard0"]
    with pytest.raises(ValueError, match="another model.*--overwrite"):
        assign(other, only_one, out, workers=1)
    with pytest.raises(ValueError, match="other settings"):
        assign(student_dir, inputs, out, workers=1, batch_size=7)
    after = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    assert after == before  # nothing overwritten, nothing left unlisted
    result = assign(other, only_one, out, workers=1, overwrite=True)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "manifest.json",
        "shard0.parquet",
    ]
    assert list(result.manifest["shards"]) == ["shard0"]


def test_a_rerun_with_fewer_inputs_keeps_every_output_listed(student_dir, tmp_path):
    inputs = write_shards(tmp_path / "in", n_shards=3)
    out = tmp_path / "out"
    assign(student_dir, inputs, out, workers=1)
    first = [p for p in find_shards(inputs) if shard_stem(p) == "shard0"]
    result = assign(student_dir, first, out, workers=1)
    listed = set(result.manifest["shards"])
    assert listed == {p.stem for p in out.glob("*.parquet")} == {"shard0", "shard1", "shard2"}


def test_foreign_folders_and_bad_options_are_refused_before_writing(student_dir, tmp_path):
    inputs = write_shards(tmp_path / "in", n_shards=1)
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not written by gem assign"):
        assign(student_dir, inputs, data, workers=1)
    (data / "manifest.json").write_text(json.dumps({"kind": "gem-shards"}))
    with pytest.raises(ValueError, match="another tool's output.*gem-shards"):
        assign(student_dir, inputs, data, workers=1)
    assert sorted(p.name for p in data.iterdir()) == ["manifest.json", "notes.txt"]
    for bad in (float("nan"), -0.1, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            assign(student_dir, inputs, tmp_path / "t", threshold=bad)
    assert not (tmp_path / "t").exists()
    with pytest.raises(ValueError, match="its own output"):
        parquet = tmp_path / "in" / "shard0.parquet"
        assign(student_dir, parquet, tmp_path / "in", workers=1, overwrite=True)


def test_a_second_run_never_races_the_first_or_its_survivors(student_dir, tmp_path, monkeypatch):
    inputs = write_shards(tmp_path / "in", n_shards=1)
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out / LOCK, what="a running gem assign"):  # another run holds the folder
        with pytest.raises(ValueError, match=rf"in use by another process \(pid {os.getpid()}\)"):
            assign(student_dir, inputs, out, workers=1)
    monkeypatch.setattr(gem_app.scale.assign, "_SURVIVOR_WAIT_S", 0.2)
    with folder_lock(out / WORKERS_LOCK, what="a worker", shared=True):  # a surviving worker
        with pytest.raises(ValueError, match="workers of a killed gem assign"):
            assign(student_dir, inputs, out, workers=1)
    assert not (out / MANIFEST).exists()
    assert assign(student_dir, inputs, out, workers=1).failed == []


def test_a_dead_worker_fails_its_shard_and_the_others_complete():
    events = queue.Queue()
    events.put(("start", 0, "a.jsonl"))
    events.put(("start", 1, "b.jsonl"))
    events.put(("progress", 1, 5))
    events.put(("done", 1, ("b.jsonl", {"status": "done", "rows": 5})))
    procs = [SimpleNamespace(exitcode=-9), SimpleNamespace(exitcode=0)]  # worker 0 was killed
    records, progressed = {}, []
    jobs = [(Path("a.jsonl"), None), (Path("b.jsonl"), None)]
    _collect(jobs, procs, events, records.__setitem__, progressed.append)
    assert records[Path("b.jsonl")] == {"status": "done", "rows": 5} and progressed == [5]
    failed = records[Path("a.jsonl")]
    assert failed["status"] == "failed" and "worker process died (exit code -9)" in failed["error"]
