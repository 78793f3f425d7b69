"""Inputs that used to end in a traceback, or wrote before failing: one line, exit 2, nothing
written (issue 10)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import gem_app.storage.runs
from gem_app.cli import build_parser, main
from gem_app.export.document import build_mixture_document
from gem_app.export.domains import domains_from_run, mix_domains
from gem_app.io.encoder import _ShardCache, embed_texts
from gem_app.storage.runs import fit_corpus, load_run
from gem_app.storage.workspace import Workspace
from tests.faults.harness import assign_shards, planted_corpus


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("errors")
    planted_corpus(folder)
    fit_corpus(
        folder / "data.parquet",
        folder / "run",
        n_clusters=3,
        embeddings=folder / "emb.npy",
        tokens_col="tokens",
        random_state=0,
    )
    return folder


@pytest.fixture
def run_copy(inputs, tmp_path):
    shutil.copytree(inputs / "run", tmp_path / "run")
    return tmp_path / "run"


def gem(args) -> int:
    """``gem`` with paths among the arguments."""
    return main([str(a) for a in args])


def exit_2(capsys, args, *messages):
    """Run ``gem args``: exit code 2 and one stderr line holding every message."""
    assert gem(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for message in messages:
        assert message in err, err
    return err


# ----------------------------------------------------------------------------- run folders
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda doc: [doc], "found a list"),
        (lambda doc: {k: v for k, v in doc.items() if k != "params"}, "'params' is missing"),
        (lambda doc: {k: v for k, v in doc.items() if k != "metadata"}, "'metadata' is missing"),
        (
            lambda doc: {**doc, "params": {**doc["params"], "bogus": 1}},
            "unknown parameter(s) 'bogus'",
        ),
    ],
)
def test_a_damaged_model_json_is_one_line(run_copy, capsys, tmp_path, edit, message):
    path = run_copy / "model.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    exit_2(capsys, ["mix", run_copy], "model.json", message)
    exit_2(capsys, ["label", run_copy], message)
    shards = tmp_path / "in"
    shards.mkdir()
    assign_shards(shards, 1, 5)
    exit_2(capsys, ["assign", run_copy, "--input", shards, "--out", tmp_path / "o"], message)


def test_a_missing_assignments_file_is_named_with_the_fix(run_copy, capsys, tmp_path):
    (run_copy / "assignments.parquet").unlink()
    exit_2(capsys, ["mix", run_copy], "assignments.parquet is missing", "refit")
    args = ["export", run_copy, "--out", tmp_path / "m.json", "--materialize", tmp_path / "s"]
    exit_2(capsys, args, "assignments.parquet is missing")
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "s").exists()


def test_files_of_two_fits_are_refused_by_every_command(inputs, run_copy, capsys, tmp_path):
    other = tmp_path / "other"
    assert gem(["fit", inputs / "data.parquet", "--embeddings", inputs / "emb.npy", "--k", "4",
                 "--tokens-col", "tokens", "--out", other]) == 0  # fmt: skip
    capsys.readouterr()
    shutil.copy(other / "assignments.parquet", run_copy / "assignments.parquet")
    for command in (["mix", run_copy], ["label", run_copy], ["compare", run_copy]):
        exit_2(capsys, command, "assignments.parquet does not belong to", "model.json")


def test_a_reordered_data_file_is_named_with_the_run(inputs, tmp_path, capsys):
    data = tmp_path / "data.parquet"
    pd.read_parquet(inputs / "data.parquet").iloc[::-1].to_parquet(data)
    shutil.copy(inputs / "emb.npy", tmp_path / "emb.npy")
    fit_corpus(data, tmp_path / "run", n_clusters=3, embeddings=tmp_path / "emb.npy")
    pd.read_parquet(inputs / "data.parquet").to_parquet(data)  # the original order again
    exit_2(capsys, ["mix", tmp_path / "run"], str(data), "model.json", "changed since")


# ----------------------------------------------------------------------------- fit and friends
def test_seed_must_be_non_negative_and_is_named(inputs, capsys, tmp_path):
    base = ["--embeddings", inputs / "emb.npy", "--k", "3", "--seed", "-1"]
    exit_2(capsys, ["fit", inputs / "data.parquet", *base, "--out", tmp_path / "r"], "--seed")
    exit_2(capsys, ["taxonomy", inputs / "data.parquet", "--levels", "3", "--seed", "-1",
                    "--embeddings", inputs / "emb.npy", "--out", tmp_path / "t"], "--seed")  # fmt: skip
    exit_2(capsys, ["compare", inputs / "run", "--seed", "-1"], "--seed")
    assert not (tmp_path / "r").exists() and not (tmp_path / "t").exists()


def test_identical_rows_suggest_nothing_the_cli_lacks(tmp_path, capsys):
    rows = [{"id": i, "text": f"same document {i}"} for i in range(12)]
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    np.save(tmp_path / "e.npy", np.tile(np.arange(1.0, 5.0, dtype=np.float32), (12, 1)))
    args = ["fit", tmp_path / "d.parquet", "--embeddings", tmp_path / "e.npy", "--k", "2"]
    err = exit_2(capsys, [*args, "--out", tmp_path / "run"], "row")
    fit_parser = build_parser()._subparsers._group_actions[0].choices["fit"]
    options = {o for action in fit_parser._actions for o in action.option_strings}
    assert set(re.findall(r"--[a-z][a-z-]*", err)) <= options, err
    if "center" in err:  # the estimator's own parameter has its CLI flag
        assert "--no-center" in options
    assert gem([*args, "--no-center", "--k", "1", "--out", tmp_path / "run"]) == 0
    capsys.readouterr()
    assert load_run(tmp_path / "run").model.center is False


def test_outputs_are_checked_before_any_embedding_or_fitting(inputs, tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(gem_app.storage.runs, "corpus_embeddings", never)
    monkeypatch.setattr(gem_app.cli.embed_cmd, "embed_texts", never)
    monkeypatch.setattr(gem_app.cli.distill_cmd, "distill_run", never)
    (tmp_path / "a-file").write_text("x")
    blocked = tmp_path / "a-file" / "out"
    exit_2(capsys, ["fit", inputs / "data.parquet", "--k", "3", "--out", blocked], "not writable")
    exit_2(capsys, ["embed", inputs / "data.parquet", "--out", blocked / "e.npy"], "not writable")
    exit_2(capsys, ["distill", inputs / "run", "--out", blocked], "not writable")
    exit_2(capsys, ["taxonomy", inputs / "data.parquet", "--levels", "3", "--out", blocked],
           "not writable")  # fmt: skip
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    exit_2(capsys, ["fit", inputs / "data.parquet", "--k", "3", "--out", foreign], "--overwrite")
    assert (foreign / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- export
def test_export_checks_everything_before_writing_anything(inputs, tmp_path, capsys):
    out = tmp_path / "mix.json"
    out.write_text("the previous export")
    shards = tmp_path / "shards"
    run = inputs / "run"
    exit_2(capsys, ["export", run, "--out", out, "--materialize", shards, "--batch-size", "0"],
           "batch_size")  # fmt: skip
    other = tmp_path / "other"
    shutil.copytree(inputs / "run", other)
    fit_corpus(inputs / "data.parquet", other, n_clusters=4, embeddings=inputs / "emb.npy")
    foreign_run = load_run(other)
    domains = domains_from_run(foreign_run)
    doc = build_mixture_document(foreign_run, mix_domains(domains), domains=domains)
    (tmp_path / "foreign.json").write_text(json.dumps(doc))
    for extra in ([], ["--materialize", shards]):
        args = ["export", run, "--from", tmp_path / "foreign.json", "--out", out, *extra]
        exit_2(capsys, args, "not the assignments file the mixture was built from")
    exit_2(capsys, ["export", run, "--out", out, "--format", "megatron", "--path-template", "x"],
           "placeholder")  # fmt: skip
    assert out.read_text() == "the previous export" and not shards.exists()


def test_export_from_a_binary_file_is_one_line(inputs, tmp_path, capsys):
    (tmp_path / "model.bin").write_bytes(bytes(range(256)) * 4)
    args = ["export", inputs / "run", "--from", tmp_path / "model.bin", "--out", tmp_path / "o"]
    exit_2(capsys, args, "not a mixture document")
    shutil.copy(inputs / "data.parquet", tmp_path / "d.json")
    args[3] = tmp_path / "d.json"
    exit_2(capsys, args, "not a mixture document")


def test_materialize_refuses_a_gem_assign_folder_unless_overwrite(inputs, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    assign_shards(tmp_path / "in", 2, 10)
    out = tmp_path / "assigned"
    assert gem(["assign", str(inputs / "run"), "--input", str(tmp_path / "in"), "--out", str(out),
                 "--embeddings-col", "emb", "--workers", "1"]) == 0  # fmt: skip
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = ["export", inputs / "run", "--out", tmp_path / "m.json", "--materialize", out]
    exit_2(capsys, args, "gem-assign-manifest", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (tmp_path / "m.json").exists()
    assert gem([*args, "--overwrite"]) == 0
    assert json.loads((out / "manifest.json").read_text())["kind"] == "gem-shards"


def test_a_damaged_saved_mixture_and_a_file_workspace_are_one_line(inputs, tmp_path, capsys):
    ws = tmp_path / "ws"
    assert gem(["mix", str(inputs / "run"), "--save", "m", "--workspace", str(ws)]) == 0
    info = Workspace(ws).load("mixtures", "m")
    (info.path / "mixture.json").write_text("{}")
    args = ["export", inputs / "run", "--mixture", "m", "--workspace", ws, "--out", tmp_path / "o"]
    exit_2(capsys, args, "corrupted", "manifest says")
    (info.path / "mixture.json").unlink()
    exit_2(capsys, args, "corrupted", "missing")
    (tmp_path / "wsfile").write_text("x")
    exit_2(capsys, ["mix", inputs / "run", "--save", "m", "--workspace", tmp_path / "wsfile"],
           "is a file, not a folder")  # fmt: skip
    exit_2(capsys, ["export", inputs / "run", "--mixture", "m", "--workspace", tmp_path / "wsfile",
                    "--out", tmp_path / "o"], "is a file, not a folder")  # fmt: skip
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- assign
@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA")
def test_assign_on_cuda_without_cuda_is_one_line(inputs, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    assign_shards(tmp_path / "in", 1, 5)
    args = ["assign", inputs / "run", "--input", tmp_path / "in", "--out", tmp_path / "o"]
    exit_2(capsys, [*args, "--device", "cuda"], "CUDA")
    assert not (tmp_path / "o").exists()


def test_assign_threshold_nan_writes_nothing(inputs, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    assign_shards(tmp_path / "in", 1, 5)
    args = ["assign", inputs / "run", "--input", tmp_path / "in", "--out", tmp_path / "o"]
    exit_2(capsys, [*args, "--threshold", "nan"], "--threshold")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- embedding cache
def test_a_poisoned_cache_entry_is_never_written_out(tmp_path, capsys):
    texts = ["a kernel driver for network cards", "a music player for audio files"]
    pd.DataFrame({"id": [1, 2], "text": texts}).to_parquet(tmp_path / "d.parquet")
    cache = tmp_path / "cache"
    clean = embed_texts(texts, cache_dir=cache)
    for vectors in _ShardCache(cache, "all-MiniLM-L6-v2").folder.glob("*.vectors.npy"):
        poisoned = np.load(vectors)
        poisoned[0] = np.nan
        np.save(vectors, poisoned)
    assert gem(["embed", str(tmp_path / "d.parquet"), "--out", str(tmp_path / "e.npy"),
                 "--cache-dir", str(cache)]) == 0  # fmt: skip
    E = np.load(tmp_path / "e.npy")
    assert np.isfinite(E).all()
    np.testing.assert_allclose(E, clean, atol=1e-5)
    assert np.isfinite(embed_texts(texts, cache_dir=cache)).all()  # the cache was repaired
