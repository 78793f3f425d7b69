"""Tests of `gem mix` and `gem export` through gem_app.cli.main on a small fitted run."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from gem_app.cli import main
from gem_app.cli.mix_cmd import parse_boost, parse_exclude
from gem_app.export.document import read_mixture
from gem_app.export.domains import domains_from_run, mix_domains
from gem_app.export.formats import FORMATS
from gem_app.storage.runs import fit_corpus, load_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(3, 6)) * 4
    vocab = [["alpha", "beta", "gamma"], ["red", "green", "blue"], ["cat", "dog", "bird"]]
    rows, X = [], []
    for i in range(90):
        k = i % 3
        rows.append(
            {
                "id": i,
                "text": " ".join(rng.choice(vocab[k], 5)),
                "tokens": int(rng.integers(10, 100)),
            }
        )
        X.append(centers[k] + rng.normal(size=6))
    pd.DataFrame(rows).to_parquet(folder / "data.parquet")
    np.save(folder / "emb.npy", np.asarray(X, dtype=np.float32))
    fit_corpus(
        folder / "data.parquet",
        folder / "run",
        n_clusters=3,
        embeddings=folder / "emb.npy",
        tokens_col="tokens",
        random_state=0,
    )
    return folder / "run"


def _weights_in(stdout):
    """Weights column of the printed table, by domain id."""
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if parts and parts[0].isdigit() and len(parts) >= 7:
            out[parts[0]] = float(parts[4])
    return out


def test_mix_prints_the_table_of_the_library_weights(run_dir, capsys):
    args = [
        str(run_dir),
        "--temperature",
        "2",
        "--gis-strength",
        "0.5",
        "--max-epochs",
        "4",
        "--exclude",
        "1",
        "--boost",
        "2=1.5",
    ]
    assert main(["mix", *args]) == 0
    shown = _weights_in(capsys.readouterr().out)
    domains = domains_from_run(load_run(run_dir))
    report = mix_domains(
        domains, temperature=2, gis_strength=0.5, max_epochs=4, exclude=["1"], boost={"2": 1.5}
    )
    assert list(shown) == ["0", "1", "2"]
    np.testing.assert_allclose(list(shown.values()), report.weights, atol=5e-5)
    assert shown["1"] == 0.0


def test_mix_save_stores_the_document_in_the_workspace(run_dir, tmp_path, capsys):
    ws = tmp_path / "ws"
    assert (
        main(["mix", str(run_dir), "--temperature", "3", "--save", "t3", "--workspace", str(ws)])
        == 0
    )
    saved = read_mixture(next(ws.glob("mixtures/t3/*/mixture.json")))
    assert saved["mixing"]["tau"] == 3.0
    out = tmp_path / "from_ws.json"
    assert (
        main(["export", str(run_dir), "--mixture", "t3", "--workspace", str(ws), "--out", str(out)])
        == 0
    )
    assert read_mixture(out) == saved
    capsys.readouterr()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--temperature", "0"], "--temperature must be a number > 0"),
        (["--temperature", "-1"], "--temperature must be a number > 0"),
        (["--exclude", "1,7"], "unknown domain id '7' in exclude"),
        (["--boost", "9=2"], "unknown domain id '9' in boost"),
        (["--boost", "2=-0.5"], "must be finite and >= 0"),
        (["--boost", "2:3"], "is not ID=FACTOR"),
        (["--exclude", "0,1,2"], "excluded"),
        (["--save", "../escape"], "outside the workspace"),
        (["--save", "a/b"], "outside the workspace"),
        (["--max-epochs", "0"], "--max-epochs"),
        (["--domains", "taxonomy"], "no taxonomy"),
    ],
)
def test_mix_rejects_bad_input_with_exit_code_2(run_dir, capsys, extra, message, tmp_path):
    assert main(["mix", str(run_dir), *extra, "--workspace", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gem mix: error:") and message in err
    assert not (tmp_path / "ws").exists() and not (run_dir.parent / "escape").exists()


def test_parsers_of_exclude_and_boost():
    assert parse_exclude(" 3, 7,,3.1 ") == ["3", "7", "3.1"] and parse_exclude("") == []
    assert parse_boost(["2=1.5", "3=0, 4=2e0"]) == {"2": 1.5, "3": 0.0, "4": 2.0}
    with pytest.raises(ValueError, match="not a number"):
        parse_boost(["2=abc"])
    with pytest.raises(ValueError, match="finite"):
        parse_boost(["2=inf"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_writes_each_format_with_the_canonical_weights(run_dir, tmp_path, fmt, capsys):
    canonical = tmp_path / "mix.json"
    common = [str(run_dir), "--temperature", "1.5", "--boost", "0=2"]
    assert main(["export", *common, "--format", "gem", "--out", str(canonical)]) == 0
    doc = read_mixture(canonical)
    out = tmp_path / f"out.{fmt}"
    assert (
        main(
            [
                "export",
                str(run_dir),
                "--from",
                str(canonical),
                "--format",
                fmt,
                "--out",
                str(out),
                "--path-template",
                "/d/{domain}.bin",
            ]
        )
        == 0
    )
    text = out.read_text(encoding="utf-8")
    names = [d["name"] for d in doc["domains"]]
    weights = [d["weight"] for d in doc["domains"]]
    if fmt == "gem":
        got = json.loads(text)
        got_names, got_weights = (
            [d["name"] for d in got["domains"]],
            [d["weight"] for d in got["domains"]],
        )
    elif fmt == "doremi":
        got = json.loads(text)["train_domain_weights"]
        got_names, got_weights = list(got), list(got.values())
    elif fmt == "regmix":
        got = yaml.safe_load(text)["train"]
        got_names, got_weights = list(got), list(got.values())
    elif fmt == "megatron":
        parts = shlex.split(text)[1:]
        got_names = [p.removeprefix("/d/").removesuffix(".bin") for p in parts[1::2]]
        got_weights = [float(x) for x in parts[0::2]]
    elif fmt == "olmo":
        got = yaml.safe_load(text)["source_list"]["sources"]
        got_names, got_weights = [s["source_name"] for s in got], [s["target_ratio"] for s in got]
    elif fmt == "hf":
        got = json.loads(text)
        got_names, got_weights = got["domains"], got["probabilities"]
    else:
        got = json.loads(text)
        got_names, got_weights = [r["domain"] for r in got], [r["weight"] for r in got]
    assert got_names == names
    np.testing.assert_allclose(got_weights, weights, rtol=0, atol=1e-12)
    capsys.readouterr()


def test_export_materializes_every_document_once(run_dir, tmp_path, capsys):
    shards = tmp_path / "shards"
    args = [
        "export",
        str(run_dir),
        "--format",
        "hf",
        "--out",
        str(tmp_path / "hf.json"),
        "--materialize",
        str(shards),
        "--content",
        "text",
    ]
    assert main(args) == 0
    assert "materialized 90 documents" in capsys.readouterr().out
    manifest = json.loads((shards / "manifest.json").read_text())
    tables = [pq.read_table(shards / s["path"]).to_pandas() for s in manifest["shards"]]
    ids = pd.concat([t["id"] for t in tables])
    assignments = pd.read_parquet(run_dir / "assignments.parquet")
    assert sorted(ids) == sorted(assignments["id"]) and not ids.duplicated().any()
    for shard, table in zip(manifest["shards"], tables, strict=True):
        members = assignments[assignments["cluster"] == int(shard["domain"])]
        assert set(table["id"]) == set(members["id"])
        assert int(table["tokens"].sum()) == shard["tokens"] == int(members["tokens"].sum())
    hf = json.loads((tmp_path / "hf.json").read_text())
    assert hf["domains"] == [s["name"] for s in manifest["shards"]]


def test_export_refuses_a_newer_schema_version(run_dir, tmp_path, capsys):
    canonical = tmp_path / "mix.json"
    assert main(["export", str(run_dir), "--out", str(canonical)]) == 0
    doc = json.loads(canonical.read_text())
    doc["schema_version"] = 99
    canonical.write_text(json.dumps(doc))
    capsys.readouterr()
    assert (
        main(
            [
                "export",
                str(run_dir),
                "--from",
                str(canonical),
                "--format",
                "doremi",
                "--out",
                str(tmp_path / "d.json"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "schema_version 99 is newer" in err and "(schema_version 1)" in err
    assert not (tmp_path / "d.json").exists()
    assert (
        main(
            [
                "export",
                str(run_dir),
                "--mixture",
                "../up",
                "--workspace",
                str(tmp_path),
                "--out",
                str(tmp_path / "x.json"),
            ]
        )
        == 2
    )
    assert "outside the workspace" in capsys.readouterr().err


def test_olmo_global_batch_size_option(run_dir, tmp_path, capsys):
    out = tmp_path / "mix.yaml"
    args = ["export", str(run_dir), "--format", "olmo", "--out", str(out)]
    assert main([*args, "--global-batch-size", "2048"]) == 0
    assert yaml.safe_load(out.read_text(encoding="utf-8"))["global_batch_size"] == 2048
    capsys.readouterr()
