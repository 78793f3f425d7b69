"""Tests of gem_app.export.document (+ export_domains, export_formats, export_shards) on a small fitted run."""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from gem_app.export.document import (
    SCHEMA_VERSION,
    build_mixture_document,
    read_mixture,
    training_domains,
    validate_mixture_document,
)
from gem_app.export.domains import _taxonomy_domains, domain_slug, domains_from_run, mix_domains
from gem_app.export.formats import FORMATS, render_mixture, write_mixture
from gem_app.export.saved import check_export_name, load_saved_mixture, save_mixture
from gem_app.export.shards import materialize, write_shards
from gem_app.mixing.weights import mixture_weights
from gem_app.storage.runs import fit_corpus

WORDS = [
    ["kernel", "driver", "linux", "module", "firmware"],
    ["python", "library", "package", "binding", "interpreter"],
    ["game", "puzzle", "arcade", "player", "level"],
    ["font", "typeface", "glyph", "unicode", "serif"],
]
SECTIONS = ["admin", "python", "games", "fonts"]


def make_run(folder, n_docs=160, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 8)) * 4
    rows, X = [], []
    for i in range(n_docs):
        k = i % 4
        text = " ".join(rng.choice(WORDS[k], 6)) + f" note{i % 5}"
        section = SECTIONS[k] if i % 8 else "misc"
        rows.append(
            {"id": f"doc{i}", "text": text, "section": section, "tokens": int(rng.integers(5, 300))}
        )
        X.append(centers[k] + rng.normal(size=8))
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(folder / "data.parquet")
    np.save(folder / "emb.npy", np.asarray(X, dtype=np.float32))
    return fit_corpus(
        folder / "data.parquet",
        folder / "run",
        n_clusters=4,
        embeddings=folder / "emb.npy",
        label_col="section",
        tokens_col="tokens",
        random_state=0,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def domains(run):
    return domains_from_run(run)


@pytest.fixture(scope="module")
def doc(run, domains):
    report = mix_domains(
        domains, temperature=2.0, gis_strength=0.3, exclude=["1"], boost={"2": 1.5}, max_epochs=4.0
    )
    return build_mixture_document(run, report, domains=domains)


# ----------------------------------------------------------------------------- domains
def test_domain_slug_is_safe_padded_and_unique():
    assert domain_slug("3", "Linux kernel!") == "gem_03_linux-kernel"
    assert domain_slug("3.1", "C++ / Qt", width=3) == "gem_003-001_c-qt"
    assert domain_slug("12", "") == "gem_12"
    assert domain_slug("5", "日本語") == "gem_05"
    assert domain_slug("4", "Ünïcode  fonts") == "gem_04_unicode-fonts"
    names = [domain_slug(str(k), "same label") for k in range(12)]
    assert names == sorted(names) and len(set(names)) == 12
    with pytest.raises(ValueError, match="'a.1'"):
        domain_slug("a.1", "x")


def test_cluster_domains_count_documents_tokens_gis_and_categories(run, domains):
    a = run.assignments
    assert domains.source == "clusters" and domains.ids == ["0", "1", "2", "3"]
    np.testing.assert_array_equal(domains.document_domain, a["cluster"].to_numpy())
    by_cluster = a.groupby("cluster")["tokens"].agg(["count", "sum"])
    for k, d in enumerate(domains.domains):
        assert d.documents == by_cluster.loc[k, "count"] and d.tokens == by_cluster.loc[k, "sum"]
        assert d.name.startswith(f"gem_{k:02d}") and d.terms and d.level == 1
    # GIS: independent G_k = (1/A) sum_i a_i q_ik log(q_ik / rho_k)
    q = run.proba().astype(np.float64)
    w = a["tokens"].to_numpy(dtype=np.float64)
    rho = run.model.cluster_masses_ / run.model.cluster_masses_.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * np.log(q / rho), 0.0)
    np.testing.assert_allclose(domains.gis, (w @ terms) / w.sum(), rtol=1e-6, atol=1e-9)
    # top categories: token share of each human label within the cluster
    for k, d in enumerate(domains.domains):
        sub = a[a["cluster"] == k]
        shares = sub.groupby("label")["tokens"].sum() / sub["tokens"].sum()
        best = shares.sort_values(ascending=False).head(3)
        assert [c for c, _ in d.top_categories] == list(best.index)
        np.testing.assert_allclose([s for _, s in d.top_categories], best.to_numpy(), rtol=1e-12)


def test_taxonomy_leaves_become_domains_with_excluded_leaves_flagged():
    nodes = [
        SimpleNamespace(
            id="0.0",
            parent="0",
            level=2,
            label="Kernel",
            terms=["kernel"],
            gis=0.4,
            excluded=False,
            top_categories=[["admin", 0.9]],
        ),
        SimpleNamespace(
            id="0.1",
            parent="0",
            level=2,
            label="Drivers",
            terms=["driver"],
            gis=0.2,
            excluded=True,
            top_categories=[],
        ),
        SimpleNamespace(
            id="1",
            parent="root",
            level=1,
            label="Games",
            terms=["game"],
            gis=0.7,
            excluded=False,
            top_categories=[],
        ),
    ]
    taxonomy = SimpleNamespace(
        leaves=lambda: nodes, document_leaf=np.array(["1", "0.0", "0.1", "1", "0.0"])
    )
    tokens = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    human = pd.Series(["games", "admin", "admin", "games", "misc"])
    ds = _taxonomy_domains(taxonomy, tokens, human)
    assert ds.source == "taxonomy" and ds.ids == ["0.0", "0.1", "1"]
    np.testing.assert_array_equal(ds.document_domain, [2, 0, 1, 2, 0])
    assert [d.tokens for d in ds.domains] == [70, 30, 50]
    assert [d.parent for d in ds.domains] == ["0", "0", None]
    assert ds.domains[0].top_categories == [["admin", 0.9]]  # the node's own
    assert ds.domains[2].top_categories == [["games", 1.0]]  # computed when the node has none
    assert ds.domains[0].name == "gem_00-00_kernel"
    report = mix_domains(ds, temperature=1.0)
    assert report.weights[1] == 0.0 and report.excluded[1]
    np.testing.assert_allclose(report.weights, [70 / 120, 0.0, 50 / 120], rtol=1e-14)
    bad = SimpleNamespace(
        leaves=lambda: nodes, document_leaf=np.array(["1", "9", "0.1", "1", "0.0"])
    )
    with pytest.raises(ValueError, match="row 1.*'9'"):
        _taxonomy_domains(bad, tokens, human)


def test_mix_domains_matches_mixture_weights_on_domain_tokens(domains):
    report = mix_domains(
        domains, temperature=2.0, gis_strength=0.3, exclude=["1"], boost={"2": 1.5}, max_epochs=4.0
    )
    tokens = np.array([d.tokens for d in domains.domains], dtype=float)
    expected = mixture_weights(
        tokens,
        temperature=2.0,
        gis=domains.gis,
        gis_strength=0.3,
        multipliers=[1, 0, 1.5, 1],
        tokens=tokens,
        max_epochs=4.0,
    )
    np.testing.assert_array_equal(report.weights, expected)
    np.testing.assert_array_equal(report.multipliers, [1.0, 0.0, 1.5, 1.0])
    with pytest.raises(ValueError, match="unknown domain id '7' in exclude"):
        mix_domains(domains, exclude=["7"])
    with pytest.raises(ValueError, match="unknown domain id '0.3' in boost"):
        mix_domains(domains, boost={"0.3": 2.0})
    with pytest.raises(ValueError, match="boost factor of domain '2'"):
        mix_domains(domains, boost={"2": -1.0})
    with pytest.raises(ValueError, match="all clusters are excluded"):
        mix_domains(domains, exclude=["0", "1", "2", "3"])
    with pytest.raises(ValueError, match="temperature"):
        mix_domains(domains, temperature=0.0)


# ----------------------------------------------------------------------------- document
def test_document_records_corpus_model_mixing_domains_and_assignments(run, domains, doc):
    a = run.assignments
    assert doc["schema_version"] == SCHEMA_VERSION and doc["kind"] == "gem-mixture"
    assert doc["corpus"]["documents"] == len(a) and doc["corpus"]["tokens"] == int(
        a["tokens"].sum()
    )
    assert doc["corpus"]["anisotropy"] == pytest.approx(run.model.anisotropy_)
    assert doc["model"] == {
        "n_clusters": 4,
        "balance": 1.0,
        "temperature": 1.0,
        "seed": 0,
        "objective": pytest.approx(run.model.objective_),
        "concentration": "tied",
    }
    m = doc["mixing"]
    weights = np.array([d["weight"] for d in doc["domains"]])
    natural = np.array([d["natural_share"] for d in doc["domains"]])
    assert math.fsum(weights) == pytest.approx(1.0, abs=1e-15)
    h = -sum(w * math.log(w) for w in weights if w > 0)
    assert m["entropy"] == pytest.approx(h, rel=1e-12) and m["effective_domains"] == pytest.approx(
        math.exp(h)
    )
    kl = sum(w * math.log(w / r) for w, r in zip(weights, natural, strict=True) if w > 0)
    assert m["kl_to_natural"] == pytest.approx(kl, rel=1e-12)
    assert (m["tau"], m["beta"], m["max_epochs"], m["budget"]) == (
        2.0,
        0.3,
        4.0,
        float(a["tokens"].sum()),
    )
    for d in doc["domains"]:
        assert d["epochs"] == pytest.approx(d["weight"] * m["budget"] / d["tokens"], rel=1e-12)
        assert d["epochs"] <= 4.0 + 1e-12
    assert doc["domains"][1]["excluded"] and doc["domains"][1]["weight"] == 0.0
    path = run.folder / "assignments.parquet"
    assert doc["assignments"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert doc["assignments"]["path"] == str(path.resolve())


def test_canonical_json_round_trips_exactly(doc, tmp_path):
    path = write_mixture(doc, tmp_path / "mix.json")
    again = read_mixture(path)
    assert again == doc
    assert json.loads(path.read_text()) == doc


def _mutated(doc, edit):
    copy = json.loads(json.dumps(doc))
    edit(copy)
    return copy


def test_validation_rejects_newer_versions_and_inconsistent_documents(doc, tmp_path):
    newer = _mutated(doc, lambda d: d.update(schema_version=SCHEMA_VERSION + 1))
    (tmp_path / "new.json").write_text(json.dumps(newer))
    with pytest.raises(
        ValueError,
        match=rf"schema_version {SCHEMA_VERSION + 1} is newer.*\(schema_version {SCHEMA_VERSION}\)",
    ):
        read_mixture(tmp_path / "new.json")
    cases = {
        "integer": lambda d: d.update(schema_version="1"),
        r"domains\[0\]\.weight": lambda d: d["domains"][0].update(weight=-0.1),
        "sum to": lambda d: d["domains"][0].update(weight=d["domains"][0]["weight"] / 2),
        "repeats the name": lambda d: d["domains"][2].update(name=d["domains"][0]["name"]),
        "excluded but has weight": lambda d: d["domains"][0].update(excluded=True),
        "'mixing' is a required property": lambda d: d.pop("mixing"),
        "holds|hold": lambda d: d["assignments"].update(documents=1),
        r"domains\[0\]\.name": lambda d: d["domains"][0].update(name="../evil"),
    }
    for message, edit in cases.items():
        with pytest.raises(ValueError, match=message):
            validate_mixture_document(_mutated(doc, edit))
    (tmp_path / "nan.json").write_text(json.dumps(doc).replace('"beta": 0.3', '"beta": NaN'))
    with pytest.raises(ValueError, match="NaN"):
        read_mixture(tmp_path / "nan.json")


# ----------------------------------------------------------------------------- formats
def _parse(fmt, text):
    """Independent parse of each format -> (names, weights)."""
    if fmt == "gem":
        d = json.loads(text)
        kept = [x for x in d["domains"] if x["weight"] > 0]
        return [x["name"] for x in kept], [x["weight"] for x in kept]
    if fmt == "doremi":
        w = json.loads(text)["train_domain_weights"]
        return list(w), list(w.values())
    if fmt == "regmix":
        w = yaml.safe_load(text)["train"]
        return list(w), list(w.values())
    if fmt == "megatron":
        tokens = shlex.split(text)
        assert tokens[0] == "--data-path"
        pairs = tokens[1:]
        return [p.rsplit("/", 1)[-1] for p in pairs[1::2]], [float(x) for x in pairs[0::2]]
    if fmt == "olmo":
        sources = yaml.safe_load(text)["source_list"]["sources"]
        return [s["source_name"] for s in sources], [s["target_ratio"] for s in sources]
    if fmt == "hf":
        d = json.loads(text)
        return d["domains"], d["probabilities"]
    if fmt == "weborganizer":
        rows = json.loads(text)
        return [r["domain"] for r in rows], [r["weight"] for r in rows]
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_names_order_and_weights(doc, fmt, tmp_path):
    path = write_mixture(doc, tmp_path / f"mix.{fmt}", fmt, path_template="/data/{domain}")
    names, weights = _parse(fmt, path.read_text(encoding="utf-8"))
    expected = training_domains(doc)
    assert names == [d["name"] for d in expected]
    assert len(expected) == 3 and doc["domains"][1]["name"] not in names  # the excluded one
    np.testing.assert_allclose(weights, [d["weight"] for d in expected], rtol=0, atol=1e-12)
    assert weights == [d["weight"] for d in expected]  # repr floats: bit-exact


def test_eval_weights_paths_and_olmo_fields(doc):
    kept = training_domains(doc)
    natural = np.array([d["natural_share"] for d in kept])
    evals = json.loads(render_mixture(doc, "doremi"))["eval_domain_weights"]
    np.testing.assert_allclose(list(evals.values()), natural / natural.sum(), rtol=1e-14)
    valid = yaml.safe_load(render_mixture(doc, "regmix", eval_weights="uniform"))["valid"]
    assert list(valid.values()) == [1 / 3] * 3
    train = json.loads(render_mixture(doc, "doremi", eval_weights="train"))
    assert train["eval_domain_weights"] == train["train_domain_weights"]
    olmo = yaml.safe_load(render_mixture(doc, "olmo", path_template="s3://b/{domain}/*.npy"))
    assert olmo["requested_tokens"] == int(doc["mixing"]["budget"])
    for src, d in zip(olmo["source_list"]["sources"], kept, strict=True):
        assert src["paths"] == [f"s3://b/{d['name']}/*.npy"] and src["max_repetition_ratio"] == 4.0
    hf = json.loads(render_mixture(doc, "hf"))
    assert hf["data_files"][kept[0]["name"]] == f"{kept[0]['name']}.parquet"
    with pytest.raises(ValueError, match="placeholder"):
        render_mixture(doc, "megatron", path_template="/data/x")
    with pytest.raises(ValueError, match="whitespace"):
        render_mixture(doc, "megatron", path_template="/my data/{domain}")
    with pytest.raises(ValueError, match="unknown export format 'parquet'"):
        render_mixture(doc, "parquet")
    with pytest.raises(ValueError, match="eval_weights"):
        render_mixture(doc, "doremi", eval_weights="best")


# ----------------------------------------------------------------------------- workspace
def test_save_and_load_mixture_in_the_workspace(doc, tmp_path):
    info = save_mixture(doc, "debian-t2", tmp_path / "ws")
    assert info.parameters["tau"] == 2.0
    assert load_saved_mixture("debian-t2", tmp_path / "ws") == doc
    for bad in ("../x", "a/b", "a\\b", ".hidden", "/abs", "..", " pad"):
        with pytest.raises(ValueError, match="outside the workspace"):
            check_export_name(bad)
        with pytest.raises(ValueError, match="outside the workspace"):
            save_mixture(doc, bad, tmp_path / "ws")
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- shards
def _read_shards(folder, manifest):
    frames = {}
    for shard in manifest["shards"]:
        path = folder / shard["path"]
        if path.suffix == ".parquet":
            frames[shard["domain"]] = pq.read_table(path).to_pandas()
        else:
            text = path.read_text(encoding="utf-8")
            frames[shard["domain"]] = pd.DataFrame([json.loads(line) for line in text.splitlines()])
        assert shard["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    return frames


@pytest.mark.parametrize(
    ("fmt", "content", "as_folder"),
    [
        ("parquet", "text", False),
        ("jsonl", "ids", True),
        ("parquet", "ids", True),
        ("jsonl", "text", False),
    ],
)
def test_materialized_shards_hold_every_document_once(run, doc, tmp_path, fmt, content, as_folder):
    out = tmp_path / "shards"
    manifest = materialize(
        run.folder if as_folder else run, doc, out, format=fmt, content=content, batch_size=37
    )
    frames = _read_shards(out, manifest)
    a = run.assignments
    all_ids = pd.concat([f["id"] for f in frames.values()])
    assert sorted(all_ids) == sorted(a["id"]) and not all_ids.duplicated().any()
    texts = dict(zip(run.frame["id"], run.frame["text"], strict=True))
    for d in doc["domains"]:
        frame = frames[d["id"]]
        members = a[a["cluster"] == int(d["id"])]
        assert list(frame["id"]) == list(members["id"])  # file order kept within a shard
        assert int(frame["tokens"].sum()) == d["tokens"] == int(members["tokens"].sum())
        if content == "text":
            assert list(frame["text"]) == [texts[i] for i in frame["id"]]
        else:
            assert "text" not in frame
    assert manifest["documents"] == len(a) and manifest["tokens"] == int(a["tokens"].sum())
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert read_mixture(out / "mixture.json") == doc


def test_materialize_can_skip_excluded_domains(run, doc, tmp_path):
    manifest = materialize(run, doc, tmp_path / "s", include_excluded=False)
    assert [s["domain"] for s in manifest["shards"]] == ["0", "2", "3"]
    assert manifest["skipped_documents"] == doc["domains"][1]["documents"]
    assert not (tmp_path / "s" / f"{doc['domains'][1]['name']}.parquet").exists()


def test_materialize_refuses_changed_runs_and_leaves_nothing_behind(run, doc, tmp_path):
    stale = _mutated(doc, lambda d: d["assignments"].update(sha256="0" * 64))
    with pytest.raises(ValueError, match="changed since the mixture was built"):
        materialize(run, stale, tmp_path / "a")
    shifted = _mutated(doc, lambda d: d["domains"][0].update(tokens=d["domains"][0]["tokens"] + 1))
    with pytest.raises(ValueError, match="domain 0 .*mixture says"):
        materialize(run, shifted, tmp_path / "b")
    assert not (tmp_path / "b").exists()  # no shard, no temporary, no manifest
    import pyarrow as pa

    batch = pa.table({"id": ["x"], "tokens": [3], "domain": [9]})
    with pytest.raises(ValueError, match="domain index 9"):
        write_shards(doc, [batch], tmp_path / "c")
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob(".c.*"))
    with pytest.raises(ValueError, match="shard format"):
        materialize(run, doc, tmp_path / "d", format="csv")


def test_a_saved_taxonomy_gives_leaf_domains_end_to_end(run, tmp_path):
    taxonomy_build = pytest.importorskip("gem_app.taxonomy.build")
    import shutil

    from gem_app.export.domains import run_taxonomy
    from gem_app.storage.runs import load_run

    shutil.copytree(run.folder, tmp_path / "run")
    copy = load_run(tmp_path / "run")
    assert run_taxonomy(copy) is None
    taxonomy = taxonomy_build.build_taxonomy(copy, (4, 2), min_df=1)
    first = taxonomy.leaves()[0].id
    taxonomy.apply({"op": "exclude", "node": first})
    taxonomy.save(tmp_path / "run")
    loaded = run_taxonomy(copy)
    domains = domains_from_run(copy, loaded)
    leaves = taxonomy.leaves()
    assert domains.source == "taxonomy" and domains.ids == [n.id for n in leaves]
    assert [d.documents for d in domains.domains] == [n.documents for n in leaves]
    assert [d.excluded for d in domains.domains] == [n.id == first for n in leaves]
    doc = build_mixture_document(copy, mix_domains(domains, temperature=2.0), domains=domains)
    assert doc["mixing"]["domain_source"] == "taxonomy" and doc["domains"][0]["weight"] == 0.0
    out = tmp_path / "shards"
    manifest = materialize(tmp_path / "run", doc, out)
    frames = _read_shards(out, manifest)
    leaf_of = dict(zip(copy.assignments["id"], loaded.document_leaf, strict=True))
    seen = []
    for leaf_id, frame in frames.items():
        assert {leaf_of[i] for i in frame["id"]} <= {leaf_id}
        seen += list(frame["id"])
    assert sorted(seen) == sorted(copy.assignments["id"])
    taxonomy.apply({"op": "rename", "node": leaves[1].id, "label": "renamed"})
    taxonomy.save(tmp_path / "run")
    with pytest.raises(ValueError, match="taxonomy edited"):
        materialize(tmp_path / "run", doc, tmp_path / "again")
