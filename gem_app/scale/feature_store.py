"""Where a student's training features live while it trains: in memory or in scratch files.

A student's fit (:meth:`~gem_app.scale.student.Student.fit`) needs, for every training text,
its hashed n-grams weighted by tf-idf (a sparse row: about 1,000 non-zeros, ~8 KB, for a
Debian description) and, optionally, its centred static vector (384 float32, 1.5 KB).
:class:`FeatureStore` builds both by chunks of :data:`CHUNK_ROWS` texts in two passes, never
holding more than a chunk's temporaries besides the store:

1. hash each chunk, add its document frequencies (and its static vectors' sum) and append
   its raw counts (and raw static vectors) to the store;
2. with the idf (and the static mean) of every text now known, weight each chunk's counts
   and centre its static vectors, in place.

``"memory"`` keeps the store in arrays: a ``csr_matrix`` and an ndarray. ``"disk"`` keeps it
in raw float32/int32 files (no header, no pickle: the dtype and layout are this module's)
in a fresh private folder (``tempfile.mkdtemp``, mode 0700, named ``gem-student-*``), and
:class:`DiskCSR` / :class:`DiskRows` read the rows a batch asks for with ``os.preadv``:
only those rows are materialised, and the resident memory does not grow with the labels.
The files are read, not memory-mapped: the operating system's page cache keeps what it
can of them, but a map would count every page an epoch touches in the process's resident
set (RSS) until the end of the fit.

The two stores go through the same chunks and the same arithmetic, so the features, and
the parameters trained on them, are bitwise equal (tests/scale/test_feature_store.py).
The folder is removed when the store closes: when ``fit`` returns, raises, or is
interrupted (KeyboardInterrupt). A process killed by a signal (SIGTERM, SIGKILL, the
out-of-memory killer) leaves its ``gem-student-*`` folder behind; nothing ever reads it
again and it can be deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from scipy import sparse

from gem_app.scale.hashing import document_frequency, idf_from_document_frequency, tfidf_weights

__all__ = [
    "AUTO_DISK_ROWS",
    "CHUNK_ROWS",
    "FEATURE_STORES",
    "DiskCSR",
    "DiskRows",
    "FeatureStore",
    "centred_unit",
    "check_scratch_dir",
    "resolve_store",
]

#: Texts hashed (and rows weighted) at a time.
CHUNK_ROWS = 4096
#: ``feature_store="auto"`` keeps the features on disk above this many texts.
AUTO_DISK_ROWS = 50_000
FEATURE_STORES = ("auto", "memory", "disk")
_PREFIX = "gem-student-"


def resolve_store(feature_store: str, n_rows: int) -> str:
    """``"memory"`` or ``"disk"``: ``"auto"`` is disk above :data:`AUTO_DISK_ROWS` rows."""
    if feature_store not in FEATURE_STORES:
        raise ValueError(f"feature_store must be one of {FEATURE_STORES}, got {feature_store!r}")
    if feature_store == "auto":
        return "disk" if n_rows > AUTO_DISK_ROWS else "memory"
    return feature_store


def check_scratch_dir(scratch_dir) -> Path | None:
    """``scratch_dir`` as a Path to an existing folder, or None (the system temp folder)."""
    if scratch_dir is None:
        return None
    path = Path(scratch_dir)
    if not path.is_dir():
        raise ValueError(f"scratch_dir {str(path)!r} is not an existing folder")
    return path


def centred_unit(vectors, mean: np.ndarray) -> np.ndarray:
    """Rows of ``vectors - mean`` scaled to unit length (a zero row stays zero), float32.

    Parameters
    ----------
    vectors : array-like of shape (N, d)
    mean : ndarray of shape (d,)
    """
    v = np.asarray(vectors, dtype=np.float32) - np.asarray(mean, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), np.float32(1e-12))


# ---------------------------------------------------------------------------- columns
class _MemoryColumn:
    """A growing array in memory: chunks appended, then one array (read/write by rows)."""

    def __init__(self, dtype):
        self.dtype, self.parts, self.array = np.dtype(dtype), [], None

    def append(self, values) -> None:
        # a copy: a hashed chunk's arrays are views of buffers ~1.4x their size (scipy's
        # sum_duplicates keeps the pre-summing buffer), which a view would keep alive
        self.parts.append(np.array(values, dtype=self.dtype, order="C", copy=True))

    def seal(self) -> None:
        """One array of the chunks, freeing each chunk as it is copied (peak: + one chunk)."""
        total = sum(len(p) for p in self.parts)
        self.array = np.empty((total, *self.parts[0].shape[1:]), dtype=self.dtype)
        position = 0
        while self.parts:
            part = self.parts.pop(0)
            self.array[position : position + len(part)] = part
            position += len(part)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]  # a view: weighting it in place writes the store

    def write(self, start: int, values) -> None:
        self.array[start : start + len(values)] = values

    def close(self) -> None:
        self.array = None


class DiskRows:
    """A growing array in a raw file of this process: appended, then read/written by rows.

    Once built, ``S[rows]`` (an int array) reads those rows, shape (len(rows), *row_shape):
    the static vectors' stand-in for an (N, d) ndarray, and the two columns of a
    :class:`DiskCSR`.
    """

    def __init__(self, path: Path, dtype):
        self.path, self.dtype, self.row_shape, self.length = path, np.dtype(dtype), None, 0
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)

    @property
    def shape(self) -> tuple:
        """(rows appended, *row_shape)."""
        return (self.length, *self.row_shape)

    def __getitem__(self, rows) -> np.ndarray:
        """Rows (an int array, any order, repeats allowed) as an ndarray (len(rows), *row_shape)."""
        return self.gather(*_runs(_row_ids(rows, self.length)))

    def _row_bytes(self) -> int:
        return self.dtype.itemsize * int(np.prod(self.row_shape))

    def append(self, values) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if self.row_shape is None:
            self.row_shape = values.shape[1:]
        _pwrite(self.fd, values, self.length * self._row_bytes())
        self.length += len(values)

    def seal(self) -> None:
        pass

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.gather(np.array([start]), np.array([stop]))

    def write(self, start: int, values) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        _pwrite(self.fd, values, start * self._row_bytes())

    def gather(self, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        """Rows ``starts[i]:stops[i]`` of every range, concatenated (one read per range)."""
        if self.fd is None:
            raise ValueError(f"the feature store is closed ({self.path} is gone)")
        out = np.empty((int(np.sum(stops - starts)), *self.row_shape), dtype=self.dtype)
        if out.size == 0:
            return out
        view, position, row_bytes = memoryview(out).cast("B"), 0, self._row_bytes()
        for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
            size = (b - a) * row_bytes
            _pread_into(self.fd, view[position : position + size], a * row_bytes, self.path)
            position += size
        return out

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _pwrite(fd: int, values: np.ndarray, offset: int) -> None:
    """Write all of an array's bytes at ``offset`` (a short write is continued)."""
    view = memoryview(values).cast("B")
    while len(view):
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def _pread_into(fd: int, view: memoryview, offset: int, path: Path) -> None:
    """Fill ``view`` from the file at ``offset`` (a short read is continued)."""
    while len(view):
        got = os.preadv(fd, [view], offset)
        if got == 0:
            raise OSError(f"scratch file {path} ended before byte {offset}")
        view, offset = view[got:], offset + got


def _runs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last + 1) of each run of consecutive ascending rows: one read per run."""
    if len(rows) == 0:
        return rows, rows
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    first = rows[np.concatenate([[0], breaks])]
    last = rows[np.concatenate([breaks - 1, [len(rows) - 1]])]
    return first, last + 1


def _row_ids(rows, n: int) -> np.ndarray:
    """``rows`` as an int64 array, every one in [0, n) (an IndexError names the first not)."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    bad = np.flatnonzero((rows < 0) | (rows >= n))
    if len(bad):
        raise IndexError(f"row {rows[bad[0]]} is out of range for {n} rows")
    return rows


class DiskCSR:
    """A CSR matrix whose data and indices are in scratch files; ``X[rows]`` reads those rows.

    Parameters
    ----------
    data, indices : DiskRows
        The store's float32 and int32 columns (length nnz).
    indptr : ndarray of shape (N + 1,), int64 (in memory: 8 bytes per row)
    n_columns : int
    """

    def __init__(self, data, indices, indptr: np.ndarray, n_columns: int):
        self._data, self._indices, self.indptr = data, indices, indptr
        self.shape = (len(indptr) - 1, int(n_columns))

    def __getitem__(self, rows) -> sparse.csr_matrix:
        """Rows (an int array) as a ``csr_matrix`` of shape (len(rows), n_columns), float32."""
        rows = _row_ids(rows, self.shape[0])
        first, stop = _runs(rows)
        starts, stops = self.indptr[first], self.indptr[stop]
        lengths = self.indptr[rows + 1] - self.indptr[rows]
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        return sparse.csr_matrix(
            (self._data.gather(starts, stops), self._indices.gather(starts, stops), indptr),
            shape=(len(rows), self.shape[1]),
        )


# ---------------------------------------------------------------------------- the store
class FeatureStore:
    """The training features of a student fit, in memory or in a private scratch folder.

    Use as a context manager: the folder and its files are removed on exit, whatever ends
    the block (a return, an exception, a KeyboardInterrupt).

    Parameters
    ----------
    where : {"memory", "disk"}
    scratch_dir : path or None
        Existing folder under which ``"disk"`` makes its ``gem-student-*`` folder (None:
        the system temp folder, :func:`tempfile.gettempdir`).
    """

    def __init__(self, where: str = "memory", scratch_dir=None):
        if where not in ("memory", "disk"):
            raise ValueError(f"where must be 'memory' or 'disk', got {where!r}")
        self.where, self.scratch_dir = where, check_scratch_dir(scratch_dir)
        self.folder, self._columns = None, []

    def __enter__(self) -> FeatureStore:
        if self.where == "disk":
            self.folder = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=self.scratch_dir))
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the files and remove the scratch folder (the features are gone)."""
        while self._columns:
            self._columns.pop().close()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def _column(self, name: str, dtype):
        if self.where == "memory":
            column = _MemoryColumn(dtype)
        elif self.folder is None:
            raise RuntimeError("a disk FeatureStore is used inside a `with` block")
        else:
            column = DiskRows(self.folder / f"{name}.{np.dtype(dtype).name}", dtype)
        self._columns.append(column)
        return column

    def build(self, texts, featurise, static_model=None):
        """Hash, weight and store the features of ``texts`` (two passes by chunks).

        Parameters
        ----------
        texts : list of str, length N >= 1
        featurise : callable
            Texts -> hashed n-gram counts, a float32 ``csr_matrix`` (n, n_buckets) with
            sorted indices (:func:`~gem_app.scale.hashing.hash_features`).
        static_model : callable or None
            Texts -> raw static vectors (n, d) (a
            :class:`~gem_app.scale.student_net.StaticVectors`); None: no static feature.

        Returns
        -------
        weights : csr_matrix or DiskCSR, shape (N, n_buckets), float32
            ``log(1 + tf) * idf``, rows L2-normalised.
        static : ndarray or DiskRows of shape (N, d), float32, or None
            The static vectors minus their mean, rows scaled to unit length.
        idf : ndarray of shape (n_buckets,), float32
        static_mean : ndarray of shape (d,), float32, or None
            Mean of the raw static vectors (summed in float64).
        """
        n = len(texts)
        if n == 0:
            raise ValueError("no texts to build features from")
        data, indices = self._column("data", np.float32), self._column("indices", np.int32)
        static = None if static_model is None else self._column("static", np.float32)
        indptr, df, total = np.zeros(n + 1, dtype=np.int64), 0, 0.0
        for start in range(0, n, CHUNK_ROWS):  # pass 1: counts, df, raw static vectors
            part = texts[start : start + CHUNK_ROWS]
            counts = featurise(part)
            if counts.shape[1] > np.iinfo(np.int32).max:  # the store's indices are int32
                raise ValueError(f"n_buckets must be below 2**31, got {counts.shape[1]}")
            df = df + document_frequency(counts)
            indptr[start + 1 : start + len(part) + 1] = counts.indptr[1:] + indptr[start]
            data.append(counts.data)
            indices.append(counts.indices)
            if static is not None:
                raw = np.asarray(static_model(part), dtype=np.float32)
                total = total + raw.sum(axis=0, dtype=np.float64)
                static.append(raw)
        n_buckets = counts.shape[1]
        idf = idf_from_document_frequency(df, n)
        mean = None if static is None else (total / n).astype(np.float32)
        for column in (data, indices, static):
            if column is not None:
                column.seal()
        for start in range(0, n, CHUNK_ROWS):  # pass 2: tf-idf and centring, in place
            stop = min(start + CHUNK_ROWS, n)
            a, b = int(indptr[start]), int(indptr[stop])
            chunk = sparse.csr_matrix(
                (data.read(a, b), indices.read(a, b), indptr[start : stop + 1] - a),
                shape=(stop - start, n_buckets),
            )
            data.write(a, tfidf_weights(chunk, idf, copy=False).data)
            if static is not None:
                static.write(start, centred_unit(static.read(start, stop), mean))
        if self.where == "disk":
            weights = DiskCSR(data, indices, indptr, n_buckets)
            return weights, static, idf, mean
        weights = sparse.csr_matrix((data.array, indices.array, indptr), shape=(n, n_buckets))
        return weights, None if static is None else static.array, idf, mean
