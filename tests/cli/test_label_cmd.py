"""The `gem label` and `gem taxonomy` commands, through gem_app.cli.main."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from gem_app.cli import main
from gem_app.taxonomy.tree import Taxonomy
from tests.conftest import topic_corpus

N_TOPICS, N_SUBS, N_PER, DIM = 3, 2, 25, 12


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return topic_corpus(
        tmp_path_factory.mktemp("cli"), n_topics=N_TOPICS, n_subs=N_SUBS, n_per=N_PER, dim=DIM
    )


def test_taxonomy_then_label(corpus, tmp_path, capsys, monkeypatch):
    data, emb, truth = corpus
    out = tmp_path / "run"
    args = ["taxonomy", str(data), "--embeddings", str(emb), "--label-col", "section"]
    args += ["--tokens-col", "tokens", "--levels", f"{N_TOPICS},{N_SUBS}", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"levels K = {N_TOPICS},{N_SUBS}" in text and "root" in text
    tax = Taxonomy.load(out)
    assert len(tax.leaves()) == N_TOPICS * N_SUBS
    assert all(f"  {leaf.id} " in text for leaf in tax.leaves())  # the tree is printed
    assert (out / "model.json").is_file()
    leaves = pd.read_parquet(out / "taxonomy_assignments.parquet")
    assert list(leaves.columns[:2]) == ["id", "leaf"] and len(leaves) == len(truth)

    for name in ("GEM_LLM_BASE_URL", "GEM_LLM_MODEL", "GEM_LLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert main(["label", str(out), "--terms", "3", "--llm"]) == 0
    text = capsys.readouterr().out
    doc = json.loads((out / "taxonomy.json").read_text())
    labels = [n for n in doc["nodes"] if n["level"] == 1]
    assert len(labels) == N_TOPICS and all(len(n["terms"]) <= 3 for n in labels)
    assert all(n["label"] in text for n in labels)
    assert "not configured" in text  # --llm without an endpoint keeps the GIS labels
    assert all(n["source"] == "gis" for n in labels)


@pytest.mark.parametrize(
    "levels, message",
    [("1,2", "K = 1"), ("4,x", "integer or 'auto'"), ("4,2,2", "K1 or K1,K2"), ("", "K1")],
)
def test_bad_levels_exit_2(corpus, tmp_path, capsys, levels, message):
    data, emb, _ = corpus
    code = main(
        [
            "taxonomy",
            str(data),
            "--embeddings",
            str(emb),
            "--levels",
            levels,
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written


def test_label_on_a_folder_without_a_run(tmp_path, capsys):
    assert main(["label", str(tmp_path)]) == 2
    assert "gem label: error" in capsys.readouterr().err


def test_auto_levels_print_the_curves(corpus, tmp_path, capsys):
    data, emb, _ = corpus
    args = ["taxonomy", str(data), "--embeddings", str(emb), "--levels", "auto,2"]
    assert main([*args, "--max-auto-k", "4", "--out", str(tmp_path / "r")]) == 0
    text = capsys.readouterr().out
    assert "level 1 BIC by K" in text and "2:" in text and "4:" in text
    assert json.loads((tmp_path / "r" / "taxonomy.json").read_text())["k_curves"]["1"]
