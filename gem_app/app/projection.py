"""Project the fitted hypersphere to something a screen can show.

- :func:`stratified_sample`: at most ``cap`` documents, every cluster represented in
  proportion to its size (with a floor), so a browser never receives the whole corpus.
- :func:`principal_sphere` (instant): the points on S^{d-1} projected onto the top three
  principal directions of the cluster mean directions, re-normalised onto S^2.
- :func:`umap_sphere` (slow, cached by the app): UMAP with ``output_metric="haversine"``,
  whose two output coordinates are spherical angles, mapped to xyz on S^2.
- :func:`sphere_to_lonlat`: xyz on S^2 -> (longitude, latitude) in degrees for a 2D map.
"""

from __future__ import annotations

import numpy as np

from gem_app.utils.optional import require_umap

__all__ = [
    "DEFAULT_POINT_CAP",
    "cluster_centres",
    "principal_sphere",
    "sphere_to_lonlat",
    "stratified_sample",
    "umap_sphere",
]

DEFAULT_POINT_CAP = 30_000


def stratified_sample(labels, cap: int = DEFAULT_POINT_CAP, *, random_state=0) -> np.ndarray:
    """Indices of at most ``cap`` rows, stratified by label, sorted.

    Each label gets ``max(1, round(cap * n_label / n))`` rows (or all of them when it has
    fewer), trimmed from the largest labels when the floors push the total over ``cap``.

    Parameters
    ----------
    labels : array-like of shape (n,), integer cluster ids
    cap : int >= 1

    Returns
    -------
    ndarray of int64, shape (min(n, cap),) when there are at most ``cap`` labels
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not isinstance(cap, (int, np.integer)) or cap < 1:
        raise ValueError(f"cap must be a positive integer, got {cap!r}")
    n = labels.shape[0]
    if n <= cap:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(random_state)
    values, counts = np.unique(labels, return_counts=True)
    quota = np.minimum(counts, np.maximum(1, np.round(cap * counts / n).astype(np.int64)))
    while quota.sum() > cap:  # floors of small clusters: trim the largest quotas
        quota[np.argmax(quota)] -= 1
    chosen = []
    for value, size in zip(values, quota, strict=True):
        members = np.flatnonzero(labels == value)
        chosen.append(rng.choice(members, size=int(size), replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _unit_rows(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def principal_sphere(points, mean_directions) -> tuple[np.ndarray, np.ndarray]:
    """Project unit points onto the top 3 principal directions of the mean directions.

    Parameters
    ----------
    points : ndarray of shape (n, d), unit rows (the corrected points x_i)
    mean_directions : ndarray of shape (K, d), unit rows

    Returns
    -------
    xyz : ndarray of shape (n, 3), unit rows
    centres : ndarray of shape (K, 3), unit rows (the projected mean directions)
    """
    points = np.asarray(points, dtype=np.float64)
    mu = np.asarray(mean_directions, dtype=np.float64)
    if points.ndim != 2 or mu.ndim != 2 or points.shape[1] != mu.shape[1]:
        raise ValueError(
            f"points {points.shape} and mean_directions {mu.shape} must be 2-D with equal widths"
        )
    d = mu.shape[1]
    if d < 3:
        raise ValueError(f"need at least 3 dimensions to draw a sphere, got {d}")
    _, _, vt = np.linalg.svd(mu - mu.mean(axis=0), full_matrices=True)
    basis = vt[:3].T  # (d, 3); completed by the SVD when K < 3
    return _unit_rows(points @ basis), _unit_rows(mu @ basis)


def umap_sphere(points, *, n_neighbors: int = 15, random_state=0, n_epochs=None) -> np.ndarray:
    """UMAP of unit points onto the 2-sphere (``output_metric="haversine"``), as xyz.

    UMAP's haversine output is (polar angle theta, azimuth phi); the point is
    ``(sin theta cos phi, sin theta sin phi, cos theta)``.

    Returns
    -------
    ndarray of shape (n, 3), unit rows
    """
    umap = require_umap()  # slow import (numba): only when a layout is asked for
    points = np.asarray(points, dtype=np.float32)
    if points.shape[0] < 4:
        raise ValueError(f"UMAP needs at least 4 points, got {points.shape[0]}")
    reducer = umap.UMAP(
        n_components=2,
        metric="cosine",
        output_metric="haversine",
        n_neighbors=min(n_neighbors, points.shape[0] - 1),
        random_state=random_state,
        n_epochs=n_epochs,
        init="random",
    )
    angles = reducer.fit_transform(points).astype(np.float64)
    theta, phi = angles[:, 0], angles[:, 1]
    return np.column_stack(
        [np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)]
    )


def cluster_centres(xyz, labels, n_clusters: int) -> np.ndarray:
    """Normalised mean of each cluster's points on S^2, shape (n_clusters, 3) (NaN if empty)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    sums = np.column_stack(
        [np.bincount(labels, weights=xyz[:, j], minlength=n_clusters) for j in range(3)]
    )
    norm = np.linalg.norm(sums, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, sums / norm, np.nan)


def sphere_to_lonlat(xyz) -> tuple[np.ndarray, np.ndarray]:
    """Longitude in (-180, 180] and latitude in [-90, 90], degrees, of unit xyz rows."""
    xyz = np.asarray(xyz, dtype=np.float64)
    lon = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))
    lat = np.degrees(np.arcsin(np.clip(xyz[:, 2], -1.0, 1.0)))
    return lon, lat
