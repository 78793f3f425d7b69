"""``gem embed DATA --out E.npy``: embed a corpus' texts with the offline encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gem_app.cli.progress import counting_callback, progress_bar
from gem_app.io.corpus import load_corpus
from gem_app.io.encoder import embed_texts
from gem_app.utils.files import atomic_path, check_writable_dir


def register(sub) -> None:
    p = sub.add_parser("embed", help="embed a corpus with the offline MiniLM encoder")
    p.add_argument("data", help="corpus file (.jsonl, .csv, .parquet)")
    p.add_argument("--out", required=True, help="output .npy file (float32, one row per file row)")
    p.add_argument("--text-col", default="text")
    p.add_argument("--id-col", default="id")
    p.add_argument("--cache-dir", default=None, help="embedding cache folder")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(handler=run)


def run(args) -> int:
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the path of the .npy file to write")
    check_writable_dir(out.parent, "the folder of --out")  # before the embedding
    corpus = load_corpus(args.data, text_col=args.text_col, id_col=args.id_col)
    with progress_bar(len(corpus.frame), "embedding", "doc") as bar:
        X = embed_texts(
            corpus.frame["text"].tolist(),
            batch_size=args.batch_size,
            cache_dir=args.cache_dir,
            progress=counting_callback(bar),
        )
    # one row per file row, so that `gem fit --embeddings` lines up with the file;
    # rejected rows get zero vectors, which the fit rejects and lists again
    n_file = len(corpus.frame) + len(corpus.rejected)
    full = np.zeros((n_file, X.shape[1]), dtype=np.float32)
    full[corpus.source_rows] = X
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, full)
    print(f"embedded {len(X)} documents -> {out} ({n_file} rows x {X.shape[1]}, float32)")
    if len(corpus.rejected):
        print(f"{len(corpus.rejected)} rows rejected (zero vectors in the output):")
        print(corpus.report())
    return 0
