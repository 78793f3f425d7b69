"""Data: pick the sample, upload a file or give a server path; map columns; validate; embed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import shared
import streamlit as st

from gem_app.app import session_keys as keys
from gem_app.app import state as app_state
from gem_app.app.bundle import SAMPLE_DATA, SAMPLE_EMBEDDINGS
from gem_app.io.corpus import load_corpus
from gem_app.io.encoder import embed_texts


def main() -> None:
    ws = shared.workspace()
    st.title("Data")
    st.caption("Choose a corpus, map its columns and check every row before fitting.")

    source = st.radio(
        "Corpus",
        ["Bundled sample", "Upload a file", "Server path"],
        horizontal=True,
        key=keys.DATA_SOURCE,
    )
    path = embeddings = None
    if source == "Bundled sample":
        path, embeddings = SAMPLE_DATA, SAMPLE_EMBEDDINGS
        st.markdown("5,000 Debian package descriptions over 58 sections, with MiniLM embeddings.")
    elif source == "Upload a file":
        upload = st.file_uploader(
            "Corpus (JSONL, CSV or Parquet)",
            type=["jsonl", "ndjson", "csv", "parquet"],
            key=keys.DATA_UPLOAD,
        )
        emb_upload = st.file_uploader(
            "Embeddings (.npy, one row per data row; optional)",
            type=["npy"],
            key=keys.DATA_UPLOAD_NPY,
        )
        if upload is not None:
            path = app_state.save_upload(ws, upload.name, upload.getvalue())
        if emb_upload is not None:
            embeddings = app_state.save_upload(ws, emb_upload.name, emb_upload.getvalue())
        st.caption("For files over a few hundred MB, use a server path instead.")
    else:
        typed = st.text_input("Path on the server (JSONL, CSV or Parquet)", key=keys.DATA_PATH)
        typed_emb = st.text_input(
            "Embeddings path (.npy or Parquet; optional)", key=keys.DATA_EMB_PATH
        )
        if typed.strip():
            path = Path(typed.strip()).expanduser()
            if not path.is_file():
                raise ValueError(
                    f"{path} does not exist or is not a file; check the path on the server"
                )
        if typed_emb.strip():
            embeddings = Path(typed_emb.strip()).expanduser()

    if path is None:
        st.info(
            "Choose a file to see its columns and validation report.", icon=":material/upload_file:"
        )
        st.stop()

    def _columns(file: Path) -> list[str]:
        suffix = file.suffix.lower()
        if suffix == ".parquet":
            return list(pq.read_schema(file).names)
        if suffix == ".csv":
            return list(pd.read_csv(file, nrows=0).columns)
        with open(file, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(record, dict):
                        return list(record)
        raise ValueError(f"{file.name}: no JSON object found on any line; is it JSON lines?")

    columns = _columns(Path(path))
    defaults = {"text": "text", "id": "id", "label": "section", "tokens": "tokens"}
    st.subheader("Column mapping")
    cols = st.columns(4)
    none = "(none)"

    def _pick(col, role, optional):
        options = ([none] if optional else []) + columns
        guess = defaults[role] if defaults[role] in columns else (none if optional else columns[0])
        return col.selectbox(
            f"{role} column", options, index=options.index(guess), key=keys.data_column(role, path)
        )

    text_col = _pick(cols[0], "text", False)
    id_col = _pick(cols[1], "id", False)
    label_col = _pick(cols[2], "label", True)
    tokens_col = _pick(cols[3], "tokens", True)
    mapping = {
        "text_col": text_col,
        "id_col": id_col,
        "label_col": None if label_col == none else label_col,
        "tokens_col": None if tokens_col == none else tokens_col,
    }

    corpus = load_corpus(path, **mapping)
    st.subheader("Validation report")
    m1, m2, m3 = st.columns(3)
    m1.metric("Valid rows", f"{len(corpus.frame):,}")
    m2.metric("Rejected rows", f"{len(corpus.rejected):,}")
    m3.metric(
        "Tokens",
        shared.fmt_tokens(corpus.frame["tokens"].sum()),
        help="estimated from UTF-8 bytes / 4" if corpus.tokens_estimated else None,
    )
    if len(corpus.rejected):
        st.warning(
            f"{len(corpus.rejected)} rows were rejected; they are listed below and left out of the fit.",
            icon=":material/rule:",
        )
        st.dataframe(corpus.rejected, hide_index=True, width="stretch", key=keys.DATA_REJECTED)
    else:
        st.success("Every row is valid.", icon=":material/check_circle:")
    with st.expander("Full report and preview"):
        st.code(corpus.report(), language=None)
        st.dataframe(corpus.frame.head(50), hide_index=True, width="stretch")

    st.subheader("Embeddings")
    if embeddings is not None:
        st.markdown(f"Using the given embeddings `{Path(embeddings).name}` (one row per data row).")
    else:
        st.markdown(
            "No embeddings given: the offline MiniLM encoder embeds the valid texts "
            "(cached in the workspace, so the fit reuses them)."
        )
        if st.button(f"Embed {len(corpus.frame):,} documents", key=keys.DATA_EMBED):
            bar = st.progress(0.0, text="Loading the encoder…")
            started = time.monotonic()

            def progress(done: int, total: int) -> None:
                elapsed = time.monotonic() - started
                left = elapsed / done * (total - done) if done else float("nan")
                bar.progress(
                    done / max(total, 1),
                    text=f"Embedded {done:,} / {total:,} · about {left:,.0f} s left",
                )

            embed_texts(
                corpus.frame["text"].tolist(),
                cache_dir=app_state.cache_dir(ws, "embedding-cache"),
                progress=progress,
            )
            bar.progress(
                1.0,
                text=f"Embedded {len(corpus.frame):,} documents in {time.monotonic() - started:.0f} s",
            )

    dataset = {
        "data": str(Path(path).resolve()),
        "embeddings": None if embeddings is None else str(Path(embeddings).resolve()),
        **mapping,
    }
    if st.button("Use this corpus on the Fit page", type="primary", key=keys.DATA_USE):
        st.session_state[keys.DATASET] = dataset
        st.success("Selected. Open **Fit** to fit GEM to it.")


shared.run_page(main)
