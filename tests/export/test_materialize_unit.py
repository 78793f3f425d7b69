"""A materialization is one unit: replaced whole, never mixed, and never over another writer's
folder without ``overwrite``."""

from __future__ import annotations

import json
import os

import pytest

from gem_app.export.document import build_mixture_document
from gem_app.export.domains import domains_from_run, mix_domains
from gem_app.export.shards import materialize
from gem_app.scale.assign import assign
from gem_app.utils.files import _owner_tag, write_json
from tests.export.test_export import make_run
from tests.faults.harness import assign_shards, verify_shards


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("unit"))


def mixture(run, tau, **kwargs):
    domains = domains_from_run(run)
    return build_mixture_document(
        run, mix_domains(domains, temperature=tau, **kwargs), domains=domains
    )


def dead_pid():
    pid = os.getpid() + 100_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def test_a_new_materialization_replaces_the_old_one_whole(run, tmp_path):
    out = tmp_path / "shards"
    materialize(run, mixture(run, 1.0), out, format="jsonl")
    (out / ".gem_00.parquet.abcd1234.tmp").write_bytes(b"left by an old kill -9")
    manifest = materialize(run, mixture(run, 2.0), out, format="parquet")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [s["path"] for s in manifest["shards"]] + ["manifest.json", "mixture.json"]
    )
    assert not any(name.endswith(".jsonl") for name in names)  # no shard of the old one left
    verify_shards(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def test_temporary_folders_of_dead_processes_are_removed(run, tmp_path):
    host = _owner_tag().split("-")[0]
    out = tmp_path / "shards"
    dead = tmp_path / f".shards.gem-build-{host}-{dead_pid()}-x1y2z3ab"
    dead.mkdir()
    (dead / "gem_00.parquet").write_bytes(b"half")
    dead_file = tmp_path / f".other.json.gem-tmp-{host}-{dead_pid()}-q1w2e3r4.tmp"
    dead_file.write_bytes(b"half")
    alive = tmp_path / f".shards.gem-build-{host}-{os.getppid()}-a1b2c3d4"  # a live writer
    alive.mkdir()
    materialize(run, mixture(run, 1.0), out)
    assert not dead.exists() and alive.exists()
    write_json(tmp_path / "other.json", {})  # any atomic write sweeps its folder
    assert not dead_file.exists()


def test_a_failing_materialization_leaves_the_old_one(run, tmp_path):
    out = tmp_path / "shards"
    materialize(run, mixture(run, 1.0), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    shifted = mixture(run, 2.0)
    shifted["domains"][0]["tokens"] += 1  # counts checked only after every shard is written
    with pytest.raises(ValueError, match="mixture says"):
        materialize(run, shifted, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def test_another_writers_folder_is_refused_unless_overwrite(run, tmp_path):
    assigned = tmp_path / "assigned"
    (tmp_path / "in").mkdir()
    assign_shards(tmp_path / "in", 1, 10, dim=8)
    result = assign(run.folder, tmp_path / "in", assigned, workers=1, embeddings_col="emb")
    assert result.failed == []
    before = {p.name: p.read_bytes() for p in assigned.iterdir()}
    with pytest.raises(ValueError, match="another tool.*gem-assign-manifest.*--overwrite"):
        materialize(run, mixture(run, 1.0), assigned)
    assert {p.name: p.read_bytes() for p in assigned.iterdir()} == before
    materialize(run, mixture(run, 1.0), assigned, overwrite=True)
    verify_shards(assigned)

    data = tmp_path / "data"
    data.mkdir()
    (data / "corpus.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="holds no shard manifest"):
        materialize(run, mixture(run, 1.0), data)
    assert (data / "corpus.jsonl").exists()

    other = make_run(tmp_path / "other", seed=3)
    with pytest.raises(ValueError, match="shards of another run"):
        materialize(other, mixture(other, 1.0), assigned)
    manifest = materialize(run, mixture(run, 3.0), assigned)  # the same run: replaced
    assert json.loads((assigned / "manifest.json").read_text()) == manifest
    assert manifest["written_by"]["run"] == str(run.folder.resolve())
