"""Tests of gem_app.storage.workspace: atomic saves, checksums, locks across processes, name checks."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

import gem_app.storage.workspace
import gem_app.utils.files
from gem_app.storage.manifest import WorkspaceCorruption
from gem_app.storage.workspace import KINDS, Workspace


def _save_two_files(ws, name="run", text=b"first", kind="fits"):
    return ws.save(kind, name, {"a.txt": text, "sub/b.bin": bytes(range(256))}, {"k": 3})


# ----------------------------------------------------------------------------- round trip
def test_save_load_round_trip_with_every_kind_of_source(tmp_path):
    ws = Workspace(tmp_path / "ws")
    source = tmp_path / "source.csv"
    source.write_bytes(b"x,y\n1,2\n")
    array = np.arange(12.0).reshape(3, 4)
    info = ws.save(
        "fits",
        "corpus-1",
        {
            "raw.bin": b"\x00\x01\x02",
            "copy.csv": source,
            "vectors.npy": lambda path: np.save(path, array),
        },
        parameters={"model": "minilm", "dim": 4},
    )
    loaded = ws.load("fits", "corpus-1")
    assert loaded == info
    assert loaded.parameters == {"model": "minilm", "dim": 4}
    assert loaded.file("raw.bin").read_bytes() == b"\x00\x01\x02"
    assert loaded.file("copy.csv").read_bytes() == source.read_bytes()
    np.testing.assert_array_equal(
        np.load(ws.path("fits", "corpus-1", "vectors.npy"), allow_pickle=False), array
    )
    manifest = json.loads((tmp_path / "ws/fits/corpus-1/manifest.json").read_text())
    assert manifest["kind"] == "fits" and manifest["name"] == "corpus-1"
    assert manifest["format_version"] == gem_app.storage.workspace.FORMAT_VERSION
    for rel, record in manifest["files"].items():
        data = (loaded.path / rel).read_bytes()
        assert record == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def test_list_exists_delete_and_replace(tmp_path, monkeypatch):
    monkeypatch.setattr(gem_app.storage.workspace, "_GRACE_S", 0.0)
    ws = Workspace(tmp_path)
    _save_two_files(ws, "b")
    _save_two_files(ws, "a")
    ws.save("mixtures", "m1", {"w.json": b"[1]"})
    assert [(r.kind, r.name) for r in ws.list()] == [
        ("fits", "a"),
        ("fits", "b"),
        ("mixtures", "m1"),
    ]
    assert [r.name for r in ws.list("mixtures")] == ["m1"]
    first = ws.load("fits", "a")
    second = ws.save("fits", "a", {"only.txt": b"new"})
    assert set(second.files) == {"only.txt"}
    assert first.path.exists()  # kept for readers that read the manifest just before
    third = ws.save("fits", "a", {"only.txt": b"newer"})
    assert not first.path.exists()  # the version before the previous one is gone
    versions = sorted(p.name for p in (tmp_path / "fits/a").iterdir() if p.is_dir())
    assert versions == sorted([second.version, third.version])
    ws.delete("fits", "a")
    assert not ws.exists("fits", "a")
    assert [r.name for r in ws.list("fits")] == ["b"]
    with pytest.raises(FileNotFoundError, match="no fits run named 'a'"):
        ws.load("fits", "a")
    with pytest.raises(FileNotFoundError):
        ws.delete("fits", "a")


def test_default_root_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GEM_WORKSPACE", str(tmp_path / "from-env"))
    assert Workspace().root == (tmp_path / "from-env").resolve()
    monkeypatch.delenv("GEM_WORKSPACE")
    monkeypatch.chdir(tmp_path)
    assert Workspace().root == (tmp_path / "gem_workspace").resolve()


def test_update_keeps_other_files_and_merges_parameters(tmp_path):
    ws = Workspace(tmp_path)
    before = _save_two_files(ws)
    after = ws.update("fits", "run", {"labels.json": b"{}"}, {"labelled": True})
    assert set(after.files) == {"a.txt", "sub/b.bin", "labels.json"}
    assert after.parameters == {"k": 3, "labelled": True}
    assert after.created == before.created and after.updated >= before.updated
    assert ws.verify("fits", "run") == []
    assert (after.path / "sub/b.bin").read_bytes() == bytes(range(256))


# ----------------------------------------------------------------------------- crashes
def _failing(*_args, **_kwargs):
    raise RuntimeError("simulated crash")


@pytest.mark.parametrize("where", ["manifest", "rename", "writer"])
def test_a_crash_mid_save_leaves_the_previous_version_intact(tmp_path, monkeypatch, where):
    ws = Workspace(tmp_path)
    before = _save_two_files(ws, text=b"version one")
    files = {"a.txt": b"version two", "sub/b.bin": b"two"}
    if where == "manifest":
        monkeypatch.setattr(gem_app.storage.workspace, "write_json", _failing)
    elif where == "rename":  # between the temporary write and the rename of the manifest
        monkeypatch.setattr(gem_app.utils.files.os, "replace", _failing)
    else:
        files["late.npy"] = _failing
    with pytest.raises(RuntimeError, match="simulated crash"):
        ws.save("fits", "run", files)
    monkeypatch.undo()
    after = ws.load("fits", "run")
    assert after == before
    assert after.file("a.txt").read_bytes() == b"version one"
    leftovers = sorted(p.name for p in (tmp_path / "fits/run").iterdir())
    assert leftovers == ["manifest.json", before.version]


def test_a_failed_first_save_leaves_no_run(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(RuntimeError):
        ws.save("fits", "new", {"x.npy": _failing})
    assert not (tmp_path / "fits/new").exists()
    assert ws.list() == []


def _save_then_die(root: str) -> None:
    """Child process: start a save whose writer kills the process half-way through."""

    def writer(path: Path) -> None:
        path.write_bytes(b"half")
        os._exit(17)

    Workspace(root).save("fits", "run", {"a.txt": b"version two", "z.bin": writer})


def test_a_killed_writer_leaves_the_previous_version_and_the_lock_free(tmp_path, monkeypatch):
    monkeypatch.setattr(gem_app.storage.workspace, "_GRACE_S", 0.0)
    ws = Workspace(tmp_path)
    before = _save_two_files(ws, text=b"version one")
    proc = mp.get_context("spawn").Process(target=_save_then_die, args=(str(tmp_path),))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 17
    assert ws.load("fits", "run") == before
    assert len([p for p in (tmp_path / "fits/run").iterdir() if p.is_dir()]) == 2  # an orphan
    after = ws.save("fits", "run", {"a.txt": b"version three"})  # the lock was released
    versions = sorted(p.name for p in (tmp_path / "fits/run").iterdir() if p.is_dir())
    assert versions == sorted([before.version, after.version])  # the orphan is gone


# ----------------------------------------------------------------------------- concurrency
def _hammer(root: str, writer_id: int, n: int, start) -> None:
    ws = Workspace(root)
    start.wait(120)  # both processes begin together, so their writes interleave
    for i in range(n):
        # read-modify-write under the run's lock: each update carries the other files over
        ws.update(
            "fits", "shared", {f"w{writer_id}-{i:03d}.json": json.dumps([writer_id, i]).encode()}
        )
        ws.save("mixtures", "contested", {"w.json": json.dumps([writer_id, i]).encode() * 50})
        ws.save("mixtures", f"own-{writer_id}-{i % 3}", {"w.bin": bytes([writer_id]) * 1000})


def test_two_processes_writing_at_once_lose_and_corrupt_nothing(tmp_path):
    n = 30
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), w, n, start)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    ws = Workspace(tmp_path)
    shared = ws.load("fits", "shared")
    assert sorted(shared.files) == sorted(f"w{w}-{i:03d}.json" for w in (1, 2) for i in range(n))
    for rel in shared.files:  # every update's file survived every other update, intact
        writer, i = json.loads(shared.file(rel).read_bytes())
        assert rel == f"w{writer}-{i:03d}.json"
    assert ws.check() == {}
    data = ws.load("mixtures", "contested").file("w.json").read_bytes()
    assert data == data[: len(data) // 50] * 50
    contested = json.loads(data[: len(data) // 50])
    assert contested[1] == n - 1
    assert len(ws.list("mixtures")) == 1 + 2 * 3


# ----------------------------------------------------------------------------- corruption
def test_a_tampered_file_is_detected_and_named(tmp_path):
    ws = Workspace(tmp_path)
    info = _save_two_files(ws)
    target = info.path / "sub/b.bin"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(WorkspaceCorruption, match=r"sub/b\.bin: checksum mismatch") as err:
        ws.load("fits", "run")
    assert err.value.problems == ["sub/b.bin: checksum mismatch (file altered)"]
    assert ws.check() == {("fits", "run"): err.value.problems}
    assert ws.load("fits", "run", verify=False).name == "run"
    with pytest.raises(WorkspaceCorruption):  # an update refuses to build on a corrupted run
        ws.update("fits", "run", {"c.txt": b"c"})


def test_missing_truncated_and_manifest_problems_are_named(tmp_path):
    ws = Workspace(tmp_path)
    info = _save_two_files(ws)
    (info.path / "a.txt").unlink()
    (info.path / "sub/b.bin").write_bytes(b"short")
    assert ws.verify("fits", "run") == ["a.txt: missing", "sub/b.bin: 5 bytes, manifest says 256"]
    manifest = tmp_path / "fits/run/manifest.json"
    manifest.write_text("{not json", encoding="utf-8")
    with pytest.raises(WorkspaceCorruption, match=r"manifest\.json: unreadable"):
        ws.load("fits", "run")
    assert ws.list() == []
    manifest.unlink()
    with pytest.raises(WorkspaceCorruption, match=r"manifest\.json: missing"):
        ws.load("fits", "run")
    assert list(ws.check()) == [("fits", "run")]


# ----------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["../escape", "a/b", "/etc", "..", ".", ".hidden", "a\\b", ""])
def test_names_outside_the_workspace_are_rejected(tmp_path, name):
    ws = Workspace(tmp_path)
    with pytest.raises(ValueError, match="outside the workspace|non-empty"):
        ws.save("fits", name, {"a.txt": b"x"})
    assert not (tmp_path / "fits").exists()


@pytest.mark.parametrize(
    "relpath", ["../x.txt", "sub/../../x.txt", "/tmp/x.txt", "a\\..\\b", "a//b"]
)
def test_file_paths_outside_the_run_are_rejected(tmp_path, relpath):
    ws = Workspace(tmp_path)
    with pytest.raises(ValueError, match="outside the workspace|non-empty"):
        ws.save("fits", "run", {relpath: b"x"})
    _save_two_files(ws)
    with pytest.raises(ValueError):
        ws.path("fits", "run", relpath)
    assert not (tmp_path.parent / "x.txt").exists()


def test_bad_kind_parameters_and_sources(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(ValueError, match="unknown kind 'models'"):
        ws.save("models", "m", {"a": b"x"})
    with pytest.raises(ValueError, match="JSON"):
        ws.save("fits", "m", {"a": b"x"}, {"bad": float("nan")})
    with pytest.raises(TypeError, match="got a str"):
        ws.save("fits", "m", {"a": "text"})
    with pytest.raises(ValueError, match="at least one file"):
        ws.save("fits", "m", {})
    assert ws.list() == [] and set(KINDS) >= {"fits", "mixtures"}


# ----------------------------------------------------------------------------- readers
def test_a_reader_overtaken_by_two_saves_gets_a_committed_version(tmp_path, monkeypatch):
    monkeypatch.setattr(gem_app.storage.workspace, "_GRACE_S", 0.0)  # the worst case
    ws = Workspace(tmp_path)
    ws.save("fits", "run", {"a.txt": b"one"})
    other = Workspace(tmp_path)  # another process, in effect
    read_manifest = gem_app.storage.workspace.read_manifest
    calls = []

    def read_then_two_saves(run_dir, kind, name):
        info = read_manifest(run_dir, kind, name)
        if not calls:  # the reader has its manifest; two saves commit now
            calls.append(info.version)
            other.save("fits", "run", {"a.txt": b"two"})
            other.save("fits", "run", {"a.txt": b"three"})
        return info

    monkeypatch.setattr(gem_app.storage.workspace, "read_manifest", read_then_two_saves)
    info = ws.load("fits", "run")
    assert calls  # the interleaving happened
    assert info.file("a.txt").read_bytes() in (b"one", b"three")  # a committed version
    assert info.version != calls[0] or info.path.is_dir()  # whose files are still there


def _save_forever(root: str, stop) -> None:
    ws = Workspace(root)
    i = 0
    while not stop.is_set():
        ws.save("mixtures", "busy", {"w.bin": bytes([i % 256]) * 100_000, "n.txt": b"%d" % i})
        i += 1


def test_readers_see_no_spurious_corruption_while_others_save(tmp_path):
    ws = Workspace(tmp_path)
    ws.save("mixtures", "busy", {"w.bin": b"\0" * 100_000, "n.txt": b"0"})
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    writers = [ctx.Process(target=_save_forever, args=(str(tmp_path), stop)) for _ in range(2)]
    for w in writers:
        w.start()
    try:
        first = ws.load("mixtures", "busy").version
        while ws.load("mixtures", "busy").version == first:  # until the writers are saving
            assert any(w.is_alive() for w in writers), [w.exitcode for w in writers]
        versions, loads = set(), 0
        while len(versions) < 10 and loads < 5000 and any(w.is_alive() for w in writers):
            info = ws.load("mixtures", "busy")  # WorkspaceCorruption would fail the test
            data = info.file("w.bin").read_bytes()
            assert data == data[:1] * len(data) and len(data) == 100_000
            versions.add(info.version)
            loads += 1
    finally:
        stop.set()
        for w in writers:
            w.join(60)
    assert [w.exitcode for w in writers] == [0, 0]
    assert len(versions) > 1  # the saves really overtook the reader
    assert ws.check() == {}


def test_corruption_is_a_value_error_and_a_file_is_not_a_workspace(tmp_path):
    assert issubclass(WorkspaceCorruption, ValueError)  # the CLI reports it in one line
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        Workspace(tmp_path / "file")
