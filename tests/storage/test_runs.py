"""Run folders as one unit: replaced whole, fingerprinted, and refused when their files or
their data do not belong together."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pandas as pd
import pytest

import gem_app.storage.runs
from gem_app.core.gem import GEM
from gem_app.storage.runs import RUN_FILES, fit_corpus, load_run
from tests.faults.harness import planted_corpus


def fit(inputs, out, k=3, seed=0, **kwargs):
    return fit_corpus(
        inputs / "data.parquet",
        out,
        n_clusters=k,
        embeddings=inputs / "emb.npy",
        tokens_col="tokens",
        random_state=seed,
        **kwargs,
    )


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    planted_corpus(folder)
    return folder


def files_of(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_failed_refit_leaves_the_previous_run_and_no_temporary(inputs, tmp_path, monkeypatch):
    out = tmp_path / "run"
    fit(inputs, out)
    before = files_of(out)

    def crash(*args, **kwargs):
        raise RuntimeError("crash while writing model.json")

    monkeypatch.setattr(GEM, "save", crash)  # after assignments.parquet was written
    with pytest.raises(RuntimeError, match="crash"):
        fit(inputs, out, k=4)
    assert files_of(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "run"]
    monkeypatch.undo()
    assert load_run(out).model.n_clusters == 3


def test_a_refit_replaces_the_run_folder_as_a_whole(inputs, tmp_path):
    out = tmp_path / "run"
    fit(inputs, out)
    (out / "taxonomy.json").write_text("{}")  # derived from the old clusters
    new = fit(inputs, out, k=4)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        name for name in RUN_FILES if name != "embeddings.npy"
    )
    assert new.folder == out and load_run(out).model.n_clusters == 4
    mode = stat.S_IMODE(out.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o777 & ~umask  # an ordinary folder, not a private temporary one
    for name in ("model.json", "model.safetensors", "assignments.parquet"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o666 & ~umask


def test_assignments_of_another_fit_are_refused_naming_both_files(inputs, tmp_path, capsys):
    fit(inputs, tmp_path / "a", k=3)
    fit(inputs, tmp_path / "b", k=4)
    # what an interrupted `gem fit --out a` left before: new assignments beside the old model
    shutil.copy(tmp_path / "b" / "assignments.parquet", tmp_path / "a" / "assignments.parquet")
    with pytest.raises(ValueError) as err:
        load_run(tmp_path / "a")
    message = str(err.value)
    assert "assignments.parquet" in message and "model.json" in message
    assert "refit" in message


def test_a_same_shape_tensor_file_of_another_run_is_refused(inputs, tmp_path):
    fit(inputs, tmp_path / "a", seed=0)
    fit(inputs, tmp_path / "b", seed=1)
    b = tmp_path / "b" / "model.safetensors"
    assert b.read_bytes() != (tmp_path / "a" / "model.safetensors").read_bytes()
    shutil.copy(b, tmp_path / "a" / "model.safetensors")
    for load in (GEM.load, load_run):
        with pytest.raises(
            ValueError, match=r"model\.safetensors does not belong to .*model\.json"
        ):
            load(tmp_path / "a")


def test_a_reordered_data_file_with_given_embeddings_is_refused(inputs, tmp_path):
    fit(inputs, tmp_path / "run")
    data = pd.read_parquet(inputs / "data.parquet")
    data.iloc[::-1].to_parquet(inputs / "data.parquet")  # the embeddings file is unchanged
    with pytest.raises(ValueError) as err:
        load_run(tmp_path / "run")
    message = str(err.value)
    assert "data.parquet changed since" in message and "model.json" in message


def test_an_edited_text_or_token_count_is_refused(inputs, tmp_path):
    fit(inputs, tmp_path / "run")
    original = pd.read_parquet(inputs / "data.parquet")
    for column, value in (("text", "an edited text"), ("tokens", 9999)):
        data = original.copy()
        data.loc[5, column] = value
        data.to_parquet(inputs / "data.parquet")
        with pytest.raises(ValueError, match="changed since"):
            load_run(tmp_path / "run")
    original.to_parquet(inputs / "data.parquet")
    assert len(load_run(tmp_path / "run").frame) == len(original)


def test_reordered_rows_of_given_embeddings_are_refused(inputs, tmp_path):
    fit(inputs, tmp_path / "run")
    X = np.load(inputs / "emb.npy")
    X[[0, 1]] = X[[1, 0]]
    np.save(inputs / "emb.npy", X)
    with pytest.raises(ValueError, match=r"emb\.npy changed since"):
        load_run(tmp_path / "run")


def test_runs_written_before_the_fingerprints_still_load(inputs, tmp_path):
    fit(inputs, tmp_path / "run")
    path = tmp_path / "run" / "model.json"
    doc = json.loads(path.read_text())
    doc.pop("safetensors_sha256")
    doc["metadata"].pop("fingerprints")
    path.write_text(json.dumps(doc))
    run = load_run(tmp_path / "run")
    assert len(run.assignments) == 90


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda doc: [doc], "a JSON object is expected, found a list"),
        (lambda doc: {k: v for k, v in doc.items() if k != "params"}, "'params' is missing"),
        (lambda doc: {k: v for k, v in doc.items() if k != "metadata"}, "'metadata' is missing"),
        (lambda doc: {**doc, "params": {**doc["params"], "bogus": 1}}, "unknown parameter"),
        (lambda doc: {**doc, "params": "k=3"}, "'params' is a str"),
        (lambda doc: {**doc, "metadata": {}}, "not a run folder"),
    ],
)
def test_a_damaged_model_json_is_a_clear_value_error(inputs, tmp_path, edit, message):
    fit(inputs, tmp_path / "run")
    path = tmp_path / "run" / "model.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(ValueError, match=message):
        load_run(tmp_path / "run")


def test_a_missing_assignments_file_is_named(inputs, tmp_path):
    fit(inputs, tmp_path / "run")
    (tmp_path / "run" / "assignments.parquet").unlink()
    with pytest.raises(ValueError, match=r"assignments\.parquet is missing.*refit"):
        load_run(tmp_path / "run")
    with pytest.raises(ValueError, match="no such run folder"):
        load_run(tmp_path / "nothing")


def test_a_foreign_folder_is_refused_unless_overwrite(inputs, tmp_path, monkeypatch):
    out = tmp_path / "assigned"
    out.mkdir()
    (out / "manifest.json").write_text('{"format": "gem-assign-manifest"}')
    (out / "shard0.parquet").write_bytes(b"output of gem assign")
    calls = []
    monkeypatch.setattr(gem_app.storage.runs, "load_corpus", lambda *a, **k: calls.append(a))
    with pytest.raises(ValueError, match="not a GEM run folder.*--overwrite"):
        fit(inputs, out)
    assert calls == []  # refused before reading or fitting anything
    monkeypatch.undo()
    assert (out / "shard0.parquet").read_bytes() == b"output of gem assign"
    fit(inputs, out, overwrite=True)
    assert not (out / "shard0.parquet").exists() and load_run(out).model.n_clusters == 3
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        fit(inputs, tmp_path / "a-file")
    with pytest.raises(ValueError, match="not writable"):
        fit(inputs, tmp_path / "a-file" / "run")
