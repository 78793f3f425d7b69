"""Arguments shared by several subcommands."""

from __future__ import annotations


def add_corpus_arguments(p) -> None:
    """DATA, --embeddings and the column mapping of a corpus file."""
    p.add_argument("data", help="corpus file (.jsonl, .csv, .parquet)")
    p.add_argument("--embeddings", help=".npy or Parquet embeddings, one row per data row")
    p.add_argument("--text-col", default="text")
    p.add_argument("--id-col", default="id")
    p.add_argument("--label-col", default=None, help="human taxonomy column (for comparison)")
    p.add_argument("--tokens-col", default=None, help="token counts (estimated when absent)")
