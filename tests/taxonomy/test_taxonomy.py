"""Tests for gem_app.taxonomy.tree (+ taxonomy_fit, taxonomy_build) on planted synthetic corpora."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq
from scipy.special import ive, logsumexp

import gem_app.storage.runs as runs_module
from gem_app.evaluate.selection import mixture_bic
from gem_app.taxonomy.build import build_taxonomy
from gem_app.taxonomy.split import choose_k, resultant_concentration
from gem_app.taxonomy.tree import Taxonomy
from tests.conftest import fit_run, topic_corpus

N_TOPICS, N_SUBS, N_PER, DIM = 4, 2, 30, 16


def planted_run(folder, k=N_TOPICS, **kwargs):
    data, emb, truth = topic_corpus(
        folder, n_topics=N_TOPICS, n_subs=N_SUBS, n_per=N_PER, dim=DIM, **kwargs
    )
    return fit_run(data, emb, folder / "run", k), truth


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    run, truth = planted_run(tmp_path_factory.mktemp("planted"))
    return run, truth, build_taxonomy(run, (N_TOPICS, N_SUBS))


def kappa_reference(rbar, d=DIM):
    """A_d(kappa) = rbar solved with scipy's Bessel ratio (independent of gem_app.core.sphere)."""
    return brentq(lambda k: ive(d / 2, k) / ive(d / 2 - 1, k) - rbar, 1e-6, 1e5)


def tree(taxonomy):
    return [n.to_dict() for n in taxonomy.walk()], list(taxonomy.document_leaf)


def purity(rows, labels):
    return max(np.bincount(labels[rows])) / len(rows)


# ----------------------------------------------------------------------------- building


def test_level1_reuses_the_run_clusters_and_level2_finds_subtopics(planted):
    run, truth, tax = planted
    cluster = run.assignments["cluster"].to_numpy()
    level1 = [n.id for n in tax.children("root")]
    assert sorted(level1) == [str(k) for k in range(N_TOPICS)]
    for k in range(N_TOPICS):
        assert set(tax.documents_of(str(k))) == set(np.flatnonzero(cluster == k))
    assert all(n.level == 2 and len(n.id.split(".")) == 2 for n in tax.leaves())
    assert len(tax.leaves()) == N_TOPICS * N_SUBS
    planted_id = truth[:, 0] * N_SUBS + truth[:, 1]
    for leaf in tax.leaves():
        rows = tax.documents_of(leaf.id)
        assert purity(rows, planted_id) > 0.95
        t, s = truth[rows[0]]
        assert any(term.startswith(f"sub{t}x{s}w") for term in leaf.terms[:3]), leaf.terms
        assert leaf.top_categories[0] == [f"sec{t}", 1.0]


def test_node_statistics_match_independent_computation(planted):
    run, _, tax = planted
    tokens = run.frame["tokens"].to_numpy()
    total = tokens.sum()
    for node in tax.walk():
        rows = tax.documents_of(node.id)
        assert node.documents == len(rows) and node.tokens == tokens[rows].sum()
        assert node.mass == pytest.approx(tokens[rows].sum() / total)
    assert sum(n.mass for n in tax.leaves()) == pytest.approx(1.0)
    # level-1 GIS: G_k = (1/A) sum_i a_i q_ik log(q_ik / rho_k) with the run's q
    q = run.proba().astype(np.float64)
    q /= q.sum(axis=1, keepdims=True)
    a = tokens.astype(np.float64)
    rho = a @ q / a.sum()
    x = run.model.transform(run.embeddings).astype(np.float64)
    for k in range(N_TOPICS):
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(q[:, k] > 0, q[:, k] * np.log(q[:, k] / rho[k]), 0.0)
        assert tax.nodes[str(k)].gis == pytest.approx(a @ g / a.sum(), rel=1e-6)
        # concentration: A_d(kappa) = ||r_k|| / n_k, solved here with scipy's ive
        r = (a * q[:, k]) @ x
        rbar = np.linalg.norm(r) / (a * q[:, k]).sum()
        kappa = kappa_reference(rbar)
        assert tax.nodes[str(k)].concentration == pytest.approx(kappa, rel=1e-6)


def test_new_level1_fit_when_k1_differs_and_small_clusters(tmp_path):
    run, truth = planted_run(tmp_path, k=3)
    tax = build_taxonomy(run, (N_TOPICS * N_SUBS, 50))
    assert tax.parameters["levels"] == [N_TOPICS * N_SUBS, 50]
    assert len(tax.children("root")) == N_TOPICS * N_SUBS
    for node in tax.children("root"):  # min(K2, documents) children, or a leaf
        if node.documents >= 2:
            assert len(node.children) == min(50, node.documents)
        else:
            assert node.is_leaf


def test_texts_empty_after_stop_words(tmp_path):
    run, _ = planted_run(tmp_path, stop_words_only=True)
    tax = build_taxonomy(run, (N_TOPICS,))
    assert (
        tax.parameters["vocabulary_size"] == 0
        and "empty vocabulary" in tax.parameters["vocabulary_note"]
    )
    assert [n.label for n in tax.leaves()] == [f"cluster {n.id}" for n in tax.leaves()]
    assert all(n.terms == [] for n in tax.leaves())


@pytest.mark.parametrize(
    "levels, match",
    [
        ((1,), "level 1: K = 1"),
        ((4, 1), "level 2: K = 1"),
        ((4, 2, 2), "1 or 2 levels"),
        (("x",), "integer or 'auto'"),
    ],
)
def test_bad_levels(planted, levels, match):
    with pytest.raises(ValueError, match=match):
        build_taxonomy(planted[0], levels)


# ----------------------------------------------------------------------------- choosing K


def test_mixture_bic_matches_independent_formula():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 5))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    mu = rng.normal(size=(3, 5))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    kappa, rho, w = np.array([2.0, 5.0, 9.0]), np.array([0.2, 0.3, 0.5]), rng.uniform(1, 3, 50)
    nu = 5 / 2 - 1
    log_c = nu * np.log(kappa) - 2.5 * np.log(2 * np.pi) - (np.log(ive(nu, kappa)) + kappa)
    log_p = logsumexp(np.log(rho) + log_c + kappa * (x @ mu.T), axis=1)
    expected = -2 * (w * 50 / w.sum()) @ log_p + (3 * 4 + 3 + 2) * np.log(50)
    assert mixture_bic(x, w, mu, kappa, rho, tied=False) == pytest.approx(expected, rel=1e-10)
    tied = -2 * (w * 50 / w.sum()) @ log_p + (3 * 4 + 1 + 2) * np.log(50)
    assert mixture_bic(x, w, mu, kappa, rho, tied=True) == pytest.approx(tied, rel=1e-10)


def test_choose_k_finds_the_planted_number_of_clusters():
    rng = np.random.default_rng(2)
    centers = np.eye(8)[:4] * 6
    X = np.vstack([c + rng.normal(size=(60, 8)) for c in centers])
    best, curve = choose_k(X, np.ones(len(X)), [2, 3, 4, 5, 6], random_state=0)
    assert min(curve, key=curve.get) == 4 == best.n_clusters
    assert set(curve) == {2, 3, 4, 5, 6}


def test_auto_level_keeps_the_curve(planted):
    run = planted[0]
    tax = build_taxonomy(run, ("auto",), max_auto_k=5)
    curve = tax.k_curves[1]
    assert set(curve) == {2, 3, 4, 5}
    assert tax.parameters["levels"] == [min(curve, key=curve.get)]


# ----------------------------------------------------------------------------- edits


def test_rename_exclude_and_errors(planted):
    tax = planted[2].replay([])
    tax.apply({"op": "rename", "node": "0.1", "label": "  Curated  "})
    assert tax.nodes["0.1"].label == "Curated" and tax.nodes["0.1"].source == "curator"
    tax.apply({"op": "exclude", "node": "1"})
    assert all(n.excluded for n in tax.walk("1"))
    tax.apply({"op": "exclude", "node": "1.0", "excluded": False})
    assert not tax.nodes["1.0"].excluded and not tax.nodes["1"].excluded
    tax.apply({"op": "exclude", "node": "2.0"})
    tax.apply({"op": "exclude", "node": "2.1"})
    assert tax.nodes["2"].excluded  # all children excluded
    assert len(tax.leaves()) == N_TOPICS * N_SUBS  # excluded leaves stay, flagged
    n_edits = len(tax.edits)
    for edit, match in [
        ({"op": "rename", "node": "9.9", "label": "x"}, "no node '9.9'"),
        ({"op": "merge", "nodes": ["0.0", "1.0"]}, "same parent"),
        ({"op": "merge", "nodes": ["0.0", "nope"]}, "no node 'nope'"),
        ({"op": "split", "node": "0.0", "n": 1}, "'0.0' needs 'n' >= 2"),
        ({"op": "split", "node": "0.0", "n": 10_000}, "only"),
        ({"op": "split", "node": "missing", "n": 2}, "no node 'missing'"),
        ({"op": "exclude", "node": "0", "excluded": "yes"}, "true or false"),
        ({"op": "rename", "node": "0", "label": ""}, "non-empty"),
        ({"op": "delete", "node": "0"}, "unknown edit op 'delete'"),
    ]:
        with pytest.raises(ValueError, match=match):
            tax.apply(edit)
    assert len(tax.edits) == n_edits  # failed edits are not logged


def test_merge_then_split_restores_the_leaf_count(planted):
    run, _, built = planted
    tax = built.replay([])
    n_leaves, n_nodes = len(tax.leaves()), len(tax.nodes)
    a, b = tax.nodes["0.0"], tax.nodes["0.1"]
    merged = tax.apply({"op": "merge", "nodes": ["0.0", "0.1"], "label": "zero"})
    node = tax.nodes[merged]
    assert merged == "0.2" and node.parent == "0" and node.label == "zero"
    assert len(tax.leaves()) == n_leaves - 1 and "0.0" not in tax.nodes
    assert node.documents == a.documents + b.documents and node.tokens == a.tokens + b.tokens
    assert node.gis == pytest.approx(a.gis + b.gis)
    rows = tax.documents_of(merged)
    assert node.concentration > 0 and np.isfinite(node.concentration)
    children = tax.apply({"op": "split", "node": merged, "n": 2, "seed": 3})
    masses = [tax.nodes[c].mass for c in children]
    assert masses == sorted(masses, reverse=True)
    assert set(children) == {"0.2.0", "0.2.1"}
    assert len(tax.leaves()) == n_leaves and len(tax.nodes) == n_nodes + 1
    assert sorted(np.concatenate([tax.documents_of(c) for c in children])) == sorted(rows)
    # merging level-1 nodes dissolves their subtrees into one leaf
    top = tax.apply({"op": "merge", "nodes": ["1", "2"]})
    assert top == str(N_TOPICS) and tax.nodes[top].is_leaf and tax.nodes[top].source == "merge"
    assert tax.nodes["root"].documents == len(run.frame)


def test_merged_concentration_from_summed_resultants(planted):
    run, _, built = planted
    tax = built.replay([])
    merged = tax.apply({"op": "merge", "nodes": ["0", "1"]})
    q = run.proba().astype(np.float64)
    q /= q.sum(axis=1, keepdims=True)
    a = run.frame["tokens"].to_numpy(dtype=np.float64)
    x = run.model.transform(run.embeddings).astype(np.float64)
    col = q[:, 0] + q[:, 1]
    rbar = np.linalg.norm((a * col) @ x) / (a * col).sum()
    kappa = kappa_reference(rbar)
    assert tax.nodes[merged].concentration == pytest.approx(kappa, rel=1e-5)
    assert resultant_concentration(np.zeros(4), 0.0) == pytest.approx(1e-3)


EDITS = [
    {"op": "rename", "node": "3", "label": "three"},
    {"op": "merge", "nodes": ["0.0", "0.1"]},
    {"op": "split", "node": "0.2", "n": 3, "seed": 7},
    {"op": "exclude", "node": "0.2.1"},
    {"op": "merge", "nodes": ["1", "2"], "label": "one and two"},
    {"op": "split", "node": "3.0", "n": 2},
]


def test_edit_log_replays_to_the_same_tree_and_survives_save_load(planted, monkeypatch):
    run, _, built = planted
    tax = built.replay([])
    for edit in EDITS:
        tax.apply(edit)
    assert tax.edits[-1]["seed"] == 0  # the default seed is recorded for replay
    assert tree(tax.replay()) == tree(tax)
    assert tree(tax.base()) == tree(built)
    folder = run.folder
    tax.save(folder)
    doc = json.loads((folder / "taxonomy.json").read_text())
    assert doc["format_version"] == 1 and len(doc["edits"]) == len(EDITS)
    leaves = pd.read_parquet(folder / "taxonomy_assignments.parquet")
    assert list(leaves["leaf"]) == list(tax.document_leaf)
    assert list(leaves["id"]) == list(run.frame["id"])

    def no_run(*args, **kwargs):
        raise AssertionError("the run was read")

    monkeypatch.setattr(runs_module, "load_run", no_run)
    loaded = Taxonomy.load(folder)
    assert tree(loaded) == tree(tax) and loaded.edits == tax.edits
    loaded.apply({"op": "rename", "node": "3", "label": "again"})
    loaded.apply({"op": "merge", "nodes": ["3", "4"]})
    monkeypatch.undo()
    replayed = Taxonomy.load(folder).replay()  # splits re-read the run lazily
    assert tree(replayed) == tree(tax)


def test_split_is_deterministic_with_its_seed(planted):
    built = planted[2]
    one, two = built.replay([]), built.replay([])
    one.apply({"op": "split", "node": "1", "n": 3, "seed": 5})
    two.apply({"op": "split", "node": "1", "n": 3, "seed": 5})
    assert tree(one) == tree(two)
    assert len(one.children("1")) == 3 and all(c.startswith("1.") for c in one.nodes["1"].children)


def test_load_rejects_a_folder_without_taxonomy(tmp_path):
    with pytest.raises(ValueError, match="no taxonomy"):
        Taxonomy.load(tmp_path)
