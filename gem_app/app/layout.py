"""Where every document of a fit sits on the map: the instant layout and the stored UMAP layout.

A :class:`MapLayout` (one per fit, shared by every browser session, see :func:`map_layout`)
gives xyz on S^2 for **all** N documents:

- :meth:`MapLayout.principal` (instant, kept in memory): the corrected points projected on the
  top principal directions of the cluster means (:func:`gem_app.app.projection.principal_sphere`).
- :meth:`MapLayout.umap` (background, once per fit): UMAP (haversine output) of a stratified
  sample of ``sample_size`` documents; every other document is placed by its nearest sample
  neighbours of its own cluster (:func:`place_by_neighbours`: cosine on the corrected sphere,
  a chunked GEMM; N * m / K similarities for m sample documents), so no document is left out. The result is stored in the fit's cache folder
  (``<workspace>/.cache/fits/<name>/<model sha>/layout-umap.npz``, written atomically), so an
  app restart, another session or another point cap reuses it: UMAP runs once per fit.

:meth:`MapLayout.progress` reports the background job (stage and fraction) for the page's
progress indicator; nothing here imports streamlit.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import torch

from gem_app.app.projection import (
    DEFAULT_POINT_CAP,
    principal_sphere,
    stratified_sample,
    umap_sphere,
)
from gem_app.utils.files import atomic_path
from gem_app.utils.validation import check_int

__all__ = [
    "LAYOUT_FILE",
    "MapLayout",
    "map_layout",
    "place_by_neighbours",
    "umap_sample_size",
]

LAYOUT_FILE = "layout-umap.npz"
_LAYOUTS: dict = {}
_LAYOUTS_LOCK = threading.Lock()
_CHUNK = 8192  # documents per chunk of the transform
_GEMM_FLOATS = 1 << 24  # similarities per chunk of the neighbour GEMM (64 MB of float32)


def umap_sample_size() -> int:
    """Documents in the UMAP sample: ``$GEM_APP_UMAP_SAMPLE`` or 30,000."""
    value = os.environ.get("GEM_APP_UMAP_SAMPLE")
    if value is None:
        return DEFAULT_POINT_CAP
    try:
        return check_int(int(value), "GEM_APP_UMAP_SAMPLE", minimum=4)
    except ValueError as exc:
        raise ValueError(f"GEM_APP_UMAP_SAMPLE must be an integer >= 4, got {value!r}") from exc


def _blend(sims: np.ndarray, idx: np.ndarray, anchor_xyz: np.ndarray, sharpness: float):
    """Weighted mean of the neighbours' xyz, ``w_j ∝ exp((s_j - s_max) * sharpness)``, on S^2.

    Falls back to the nearest neighbour's xyz where the neighbours point apart (|mean| < 0.5).
    """
    w = np.exp((sims - sims[:, :1]) * sharpness)
    mean = np.einsum("nk,nkr->nr", w, anchor_xyz[idx]) / w.sum(axis=1, keepdims=True)
    norm = np.linalg.norm(mean, axis=1, keepdims=True)
    nearest = anchor_xyz[idx[:, 0]]
    return np.where(norm >= 0.5, mean / np.maximum(norm, 1e-12), nearest)


def place_by_neighbours(
    points,
    anchors,
    anchor_xyz,
    *,
    n_neighbors: int = 4,
    sharpness: float = 50.0,
    chunk_rows: int | None = None,
    progress=None,
) -> np.ndarray:
    """Place points on S^2 from their nearest anchors (cosine similarity of unit rows).

    Parameters
    ----------
    points : ndarray of shape (n, d), unit rows (the corrected documents to place)
    anchors : ndarray of shape (m, d), unit rows (the UMAP sample)
    anchor_xyz : ndarray of shape (m, 3), unit rows (the anchors' layout)
    n_neighbors : int >= 1
        Neighbours blended (weights ``exp((s_j - s_max) * sharpness)``); a point equal to an
        anchor lands on it when its other neighbours are less similar.
    chunk_rows : int, optional
        Points per GEMM (memory ``chunk_rows * m`` floats); default: 2^24 / m (64 MB).
    progress : callable, optional
        ``progress(done, n)`` after each chunk.

    Returns
    -------
    ndarray of float64, shape (n, 3), unit rows
    """
    anchor_xyz = np.asarray(anchor_xyz, dtype=np.float64)
    anchors_t = torch.from_numpy(np.ascontiguousarray(anchors, dtype=np.float32))
    n = len(points)
    if anchors_t.ndim != 2 or anchor_xyz.shape != (anchors_t.shape[0], 3):
        raise ValueError(
            f"anchors {tuple(anchors_t.shape)} and anchor_xyz {anchor_xyz.shape} disagree"
        )
    k = min(check_int(n_neighbors, "n_neighbors", minimum=1), anchors_t.shape[0])
    if chunk_rows is None:
        chunk_rows = max(64, _GEMM_FLOATS // max(anchors_t.shape[0], 1))
    out = np.empty((n, 3), dtype=np.float64)
    for start in range(0, n, chunk_rows):
        block = torch.from_numpy(
            np.ascontiguousarray(points[start : start + chunk_rows], dtype=np.float32)
        )
        sims, idx = torch.topk(block @ anchors_t.T, k, dim=1)
        out[start : start + len(block)] = _blend(
            sims.double().numpy(), idx.numpy(), anchor_xyz, sharpness
        )
        if progress is not None:
            progress(min(start + chunk_rows, n), n)
    return out


def _corrected(model, embeddings, rows=None, progress=None) -> np.ndarray:
    """``model.transform`` of the embeddings (or of ``rows``), in chunks, float32 (n, d)."""
    n = len(embeddings) if rows is None else len(rows)
    out = np.empty((n, embeddings.shape[1]), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        sel = slice(start, start + _CHUNK)
        block = embeddings[sel] if rows is None else embeddings[rows[sel]]
        out[sel] = np.asarray(model.transform(block), dtype=np.float32)
        if progress is not None:
            progress(min(start + _CHUNK, n), n)
    return out


class MapLayout:
    """All documents of one fit on S^2: instant and UMAP layouts (see the module docstring).

    Parameters
    ----------
    model : fitted GEM (``transform``, ``mean_directions_``)
    embeddings : ndarray of shape (N, d)
    labels : ndarray of int, shape (N,) (hard clusters; the UMAP sample is stratified by them)
    cache : Path, the fit's cache folder
    """

    def __init__(self, model, embeddings, labels, cache: Path):
        self.model, self.embeddings, self.labels = model, embeddings, np.asarray(labels)
        self.path = Path(cache) / LAYOUT_FILE
        self._lock = threading.RLock()
        self._principal: np.ndarray | None = None
        self._umap: tuple[np.ndarray, np.ndarray] | None = None
        self._thread: threading.Thread | None = None
        self._samples: dict[int, np.ndarray] = {}
        self._progress = (0.0, "")
        self._started = 0.0
        self.error: str | None = None

    @property
    def n_documents(self) -> int:
        return int(len(self.labels))

    def point_rows(self, cap: int = DEFAULT_POINT_CAP) -> np.ndarray:
        """At most ``cap`` rows, stratified by cluster: the points sent to the browser (cached)."""
        with self._lock:
            if cap not in self._samples:
                rows = stratified_sample(self.labels, cap, random_state=0)
                rows.flags.writeable = False
                self._samples = {cap: rows}  # one cap at a time per fit
            return self._samples[cap]

    # ---------------------------------------------------------------- instant
    def principal(self) -> np.ndarray:
        """xyz of every document on the principal-directions sphere, float32 (N, 3)."""
        with self._lock:
            if self._principal is None:
                xyz = np.empty((self.n_documents, 3), dtype=np.float32)
                mu = self.model.mean_directions_
                for start in range(0, self.n_documents, _CHUNK):  # N x 3 kept, not N x d
                    rows = np.arange(start, min(start + _CHUNK, self.n_documents))
                    points = _corrected(self.model, self.embeddings, rows)
                    xyz[rows] = principal_sphere(points, mu)[0]
                xyz.flags.writeable = False
                self._principal = xyz
            return self._principal

    # ---------------------------------------------------------------- UMAP
    def umap(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(sample_rows, xyz)`` of the stored UMAP layout (xyz float32 (N, 3)), or None."""
        with self._lock:
            if self._umap is None and self.path.is_file():
                try:
                    with np.load(self.path, allow_pickle=False) as data:
                        rows, xyz = data["sample_rows"], data["xyz"]
                except (OSError, ValueError, KeyError):
                    return None  # damaged: computed again on the next start
                if xyz.shape != (self.n_documents, 3):
                    return None
                xyz.flags.writeable = False
                self._umap = (rows, xyz)
            return self._umap

    @property
    def stamp(self) -> int:
        """When the stored UMAP layout was written (ns), 0 when there is none: a cache key."""
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return 0

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def progress(self) -> tuple[float, str]:
        """(fraction done in [0, 1], what is running) of the background layout."""
        fraction, text = self._progress
        elapsed = time.monotonic() - self._started if self._started else 0.0
        return fraction, f"{text} ({elapsed:.0f} s)" if text else text

    def start(self, sample_size: int | None = None, *, n_epochs=None, retry: bool = False) -> bool:
        """Compute the UMAP layout in a background thread unless stored; True when running.

        After a failure (:attr:`error`) it starts again only with ``retry=True``, so a page
        that polls the job does not restart a failing layout on every rerun.
        """
        with self._lock:
            if self.umap() is not None or (self.error is not None and not retry):
                return False
            if self.running():
                return True
            self.error = None
            self._started = time.monotonic()
            size = sample_size or umap_sample_size()
            self._progress = (0.0, f"UMAP of {min(size, self.n_documents):,} sample documents")
            self._thread = threading.Thread(
                target=self._run,
                args=(size, n_epochs),
                daemon=True,
                name=f"umap-{self.path.parent.name}",
            )
            self._thread.start()
            return True

    def compute(self, sample_size: int | None = None, *, n_epochs=None) -> None:
        """Compute and store the UMAP layout now (blocking); errors are raised."""
        self._compute(sample_size or umap_sample_size(), n_epochs)

    def _run(self, sample_size: int, n_epochs) -> None:
        try:
            self._compute(sample_size, n_epochs)
        except Exception as exc:  # reported on the page; the instant layout stays usable
            self.error = f"{type(exc).__name__}: {exc}"

    def _compute(self, sample_size: int, n_epochs) -> None:
        n = self.n_documents
        rows = stratified_sample(self.labels, sample_size, random_state=0)
        self._progress = (0.0, f"UMAP of {len(rows):,} sample documents")
        sample = _corrected(self.model, self.embeddings, rows)
        xyz = np.empty((n, 3), dtype=np.float32)
        xyz[rows] = umap_sphere(sample, random_state=0, n_epochs=n_epochs)
        rest = np.setdiff1d(np.arange(n), rows, assume_unique=True)
        if rest.size:
            self._place_rest(rest, rows, sample, xyz)
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, sample_rows=rows, xyz=xyz)
        self._progress = (1.0, "done")
        with self._lock:
            self._umap = None
        self.umap()

    def _place_rest(self, rest, rows, sample, xyz) -> None:
        """Place the documents outside the sample by their nearest sample neighbours of their own
        cluster (the stratified sample has every cluster): N * m / K similarities, not N * m."""
        text = f"placing the other {rest.size:,} documents by their nearest sample neighbours"
        self._progress = (0.5, text)
        done = 0
        sample_labels = self.labels[rows]
        for k in np.unique(self.labels[rest]):
            anchors = np.flatnonzero(sample_labels == k)
            if anchors.size == 0:  # a sample smaller than K: fall back to the whole sample
                anchors = np.arange(rows.size)
            members = rest[self.labels[rest] == k]
            for start in range(0, members.size, 20 * _CHUNK):
                part = members[start : start + 20 * _CHUNK]
                points = _corrected(self.model, self.embeddings, part)
                xyz[part] = place_by_neighbours(points, sample[anchors], xyz[rows[anchors]])
                done += part.size
                self._progress = (0.5 + 0.5 * done / rest.size, text)


def map_layout(view) -> MapLayout:
    """The shared :class:`MapLayout` of a :class:`gem_app.app.views.FitView` (one per cache folder)."""
    key = str(view.cache)
    with _LAYOUTS_LOCK:
        layout = _LAYOUTS.get(key)
        if layout is None or layout.n_documents != view.n_documents:
            layout = MapLayout(view.model, view.run.embeddings, view.hard_labels, view.cache)
            _LAYOUTS[key] = layout
            while len(_LAYOUTS) > 4:  # a few fits; their arrays are N x 3
                _LAYOUTS.pop(next(iter(_LAYOUTS)))
        return layout
