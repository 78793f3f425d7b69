"""Tests of ``gem compare`` through gem_app.cli.main on a small synthetic corpus."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics

from gem_app.cli import main
from gem_app.cli.compare_cmd import parse_baselines
from gem_app.evaluate.baselines import BASELINES, run_baseline

N_PER, K, D = 30, 3, 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A JSONL corpus with a ``section`` and an ``other`` column, planted embeddings."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(K), N_PER)
    X = 3.0 * rng.normal(size=(K, D))[y] + rng.normal(size=(len(y), D))
    records = [
        {
            "id": f"doc{i}",
            "text": f"document {i} about topic{y[i]} and word{i % 7}",
            # one section in ten disagrees with the planted cluster
            "section": f"s{(y[i] + (i % 10 == 0)) % K}",
            "other": f"o{i % 2}",
            "tokens": int(5 + i % 11),
        }
        for i in range(len(y))
    ]
    data = folder / "corpus.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    emb = folder / "emb.npy"
    np.save(emb, X.astype(np.float32))
    return data, emb, pd.DataFrame(records), X.astype(np.float32)


def fit_run(corpus, out, label_col="section"):
    data, emb, _, _ = corpus
    argv = [
        "fit",
        str(data),
        "--embeddings",
        str(emb),
        "--tokens-col",
        "tokens",
        "--k",
        str(K),
        "--out",
        str(out),
    ]
    if label_col:
        argv += ["--label-col", label_col]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(corpus, tmp_path_factory):
    return fit_run(corpus, tmp_path_factory.mktemp("runs") / "run")


def test_compare_writes_every_metric_equal_to_sklearn(run_dir, corpus, capsys):
    _, _, frame, X = corpus
    started = time.perf_counter()
    assert main(["compare", str(run_dir), "--baselines", "kmeans,vmf-em", "--seed", "3"]) == 0
    elapsed = time.perf_counter() - started
    printed = capsys.readouterr().out
    assert "AMI" in printed and "kmeans" in printed and "misalignment" in printed
    doc = json.loads((run_dir / "compare.json").read_text(encoding="utf-8"))
    assert doc["label_column"] == "section"
    assert doc["n_documents"] == len(frame) and doc["n_clusters"] == K
    assert list(doc["methods"]) == ["gem", "kmeans", "vmf-em"]
    human = frame["section"].to_numpy()
    tokens = frame["tokens"].to_numpy(dtype=float)
    gem_labels = pd.read_parquet(run_dir / "assignments.parquet")["cluster"].to_numpy()
    kmeans = run_baseline("kmeans", X, K, sample_weight=tokens, random_state=3).labels
    for name, labels in (("gem", gem_labels), ("kmeans", kmeans)):
        m = doc["methods"][name]["metrics"]
        assert m["ami"] == pytest.approx(metrics.adjusted_mutual_info_score(human, labels))
        assert m["nmi"] == pytest.approx(metrics.normalized_mutual_info_score(human, labels))
        assert m["ari"] == pytest.approx(metrics.adjusted_rand_score(human, labels))
        masses = np.bincount(labels, weights=tokens) / tokens.sum()
        masses = masses[masses > 0]
        assert m["balance"] == pytest.approx(-(masses * np.log(masses)).sum() / np.log(K))
        assert m["largest_share"] == pytest.approx(masses.max())
        assert m["outlier_share"] == 0.0 and m["n_outliers"] == 0
    assert doc["methods"]["gem"]["metrics"]["seconds"] is None
    seconds = [doc["methods"][name]["metrics"]["seconds"] for name in ("kmeans", "vmf-em")]
    assert all(s > 0 for s in seconds) and sum(seconds) <= elapsed
    # The misalignment report is GEM's, and the planted disagreement leaves every category
    # mostly in one cluster: nothing split at the default threshold.
    assert (
        doc["misalignment"]["split_categories"]
        == doc["methods"]["gem"]["comparison"]["split_categories"]
    )
    table = np.asarray(doc["methods"]["gem"]["comparison"]["table"]["values"])
    assert table.sum() == pytest.approx(tokens.sum())


def test_compare_another_label_column_and_no_baselines(run_dir, corpus):
    _, _, frame, _ = corpus
    assert main(["compare", str(run_dir), "--label-col", "other", "--baselines", "none"]) == 0
    doc = json.loads((run_dir / "compare.json").read_text(encoding="utf-8"))
    assert doc["label_column"] == "other" and list(doc["methods"]) == ["gem"]
    labels = pd.read_parquet(run_dir / "assignments.parquet")["cluster"].to_numpy()
    expected = metrics.adjusted_mutual_info_score(frame["other"].to_numpy(), labels)
    assert doc["methods"]["gem"]["metrics"]["ami"] == pytest.approx(expected)
    # "other" alternates within every cluster: both of its categories are split.
    assert len(doc["misalignment"]["split_categories"]) == 2


def test_bad_input_gives_exit_code_2_and_one_line(run_dir, corpus, tmp_path, capsys):
    before = (
        (run_dir / "compare.json").read_bytes() if (run_dir / "compare.json").exists() else None
    )
    assert main(["compare", str(run_dir), "--baselines", "kmeans,dbscan"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown baseline 'dbscan'" in err and "\n" not in err
    assert main(["compare", str(run_dir), "--label-col", "nope", "--baselines", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'nope' not found" in err and "\n" not in err
    after = (run_dir / "compare.json").read_bytes() if (run_dir / "compare.json").exists() else None
    assert after == before  # nothing written on failure
    unlabelled = fit_run(corpus, tmp_path / "unlabelled", label_col=None)
    assert main(["compare", str(unlabelled), "--baselines", "none"]) == 2
    assert "--label-col" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing"), "--baselines", "none"]) == 2


def test_parse_baselines():
    assert parse_baselines("all") == list(BASELINES)
    assert parse_baselines("none") == []
    assert parse_baselines(" vmf-em, kmeans,vmf-em ") == ["vmf-em", "kmeans"]
    with pytest.raises(ValueError, match="unknown baseline 'x'"):
        parse_baselines("kmeans,x")
