"""The student's network and its frozen static-vector feature (no encoder layer is run).

:class:`StudentNet` is an ``EmbeddingBag`` over hashed n-grams plus a linear map of the
static vector, then [ReLU -> linear] to K logits. :class:`StaticVectors` is the mean of
the offline MiniLM's *input* word-piece embeddings, read from its files
(:func:`minilm_files`); :func:`table_sha256` fingerprints that table for the student files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from gem_app.io.encoder import DEFAULT_MODEL, OFFLINE_MODELS

__all__ = ["StaticVectors", "StudentNet", "batch_inputs", "minilm_files", "table_sha256"]


def minilm_files():
    """(tokenizer.json path, word-piece embedding table (V, 384) float32) of the offline MiniLM."""
    folder = Path(OFFLINE_MODELS[DEFAULT_MODEL][0]())
    tensors = load_file(str(folder / "model.safetensors"))
    table = next(v for k, v in tensors.items() if k.endswith("word_embeddings.weight"))
    return folder / "tokenizer.json", np.ascontiguousarray(table, dtype=np.float32)


def table_sha256(table=None) -> str:
    """SHA-256 of a word-piece table's float32 bytes (default: the installed MiniLM's)."""
    if table is None:
        table = minilm_files()[1]
    return hashlib.sha256(np.ascontiguousarray(table, dtype=np.float32).tobytes()).hexdigest()


class StaticVectors:
    """Mean of the encoder's input word-piece embeddings (no transformer layer is run).

    Parameters
    ----------
    tokenizer_json : str
        The tokenizer's JSON (``tokenizer.json``'s text).
    table : ndarray of shape (V, dim), float32
    max_tokens : int, default=512
        Texts are truncated to this many word pieces.
    """

    def __init__(self, tokenizer_json: str, table: np.ndarray, max_tokens: int = 512):
        self.tokenizer_json = tokenizer_json
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)
        self.table = torch.from_numpy(table)

    @classmethod
    def from_minilm(cls) -> tuple[StaticVectors, np.ndarray]:
        """The installed MiniLM's static vectors, and its table (for :func:`table_sha256`)."""
        tokenizer_path, table = minilm_files()
        return cls(tokenizer_path.read_text(encoding="utf-8"), table), table

    def __call__(self, texts) -> torch.Tensor:
        """(N, dim) float32 mean vectors (zeros for a text without tokens)."""
        ids = [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]
        lengths = torch.tensor([len(i) for i in ids], dtype=torch.int64)
        flat = torch.tensor([t for i in ids for t in i], dtype=torch.int64)
        offsets = torch.cumsum(lengths, 0) - lengths
        return torch.nn.functional.embedding_bag(flat, self.table, offsets, mode="mean")


class StudentNet(torch.nn.Module):
    """EmbeddingBag over hashed n-grams (+ linear map of the static vector) -> [ReLU -> linear].

    Parameters
    ----------
    n_buckets : int
        Rows of the n-gram table.
    hidden : int
        Width of the hidden layer; 0: the bag itself gives the K logits (linear student).
    n_clusters : int
        K, the number of outputs.
    static_dim : int
        Width of the static vector (0: none, a bias instead).
    """

    def __init__(self, n_buckets: int, hidden: int, n_clusters: int, static_dim: int):
        super().__init__()
        width = hidden or n_clusters
        self.ngrams = torch.nn.EmbeddingBag(n_buckets, width, mode="sum")
        self.static = torch.nn.Linear(static_dim, width) if static_dim else None
        self.bias = None if static_dim else torch.nn.Parameter(torch.zeros(width))
        self.head = torch.nn.Linear(hidden, n_clusters) if hidden else None

    def forward(self, indices, offsets, weights, static=None):
        """Logits of shape (batch, n_clusters) from the flattened bags (see :func:`batch_inputs`)."""
        z = self.ngrams(indices, offsets, per_sample_weights=weights)
        z = z + (self.static(static) if self.static is not None else self.bias)
        return self.head(torch.relu(z)) if self.head is not None else z


def batch_inputs(weights, static, rows, device):
    """The network's inputs for some rows: (indices, offsets, per-sample weights, static).

    Parameters
    ----------
    weights : scipy.sparse.csr_matrix of shape (N, n_buckets)
        tf-idf weights of the hashed n-grams (or a stand-in whose ``weights[rows]`` is one).
    static : ndarray of shape (N, dim) (or a stand-in whose ``static[rows]`` is one), or None
    rows : ndarray of int
    device : torch.device
    """
    sub = weights[rows]
    indices = torch.from_numpy(sub.indices.astype(np.int64)).to(device)
    offsets = torch.from_numpy(sub.indptr[:-1].astype(np.int64)).to(device)
    values = torch.from_numpy(sub.data).to(device)
    v = None if static is None else torch.from_numpy(static[rows]).to(device)
    return indices, offsets, values, v
