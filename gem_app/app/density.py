"""Every document on the map: a density raster of all N documents, binned on the server.

The interactive points are a stratified sample (:mod:`gem_app.app.projection`); under them
the map draws a raster of *all* documents, so nothing is invisible on a corpus of 10^6
documents. The raster is an equirectangular grid of (longitude, latitude) pixels, built by
one ``np.bincount`` over flat pixel indices (O(N), no per-pixel loop):

- ``counts[j, i]``: documents in pixel (row j from the north, column i from lon = -180);
- ``by_category[c, j, i]``: documents of category ``c`` (cluster or human category) in it;
- ``value_sum[j, i]``: the sum of a number per document (GIS, chosen weight) in it, so
  ``value_sum / counts`` is the pixel's mean.

``counts.sum() == N`` and ``by_category.sum(axis=(1, 2))`` are the category sizes: binning
loses no document (a longitude of exactly 180 degrees falls into the last column, a
latitude of exactly -90 into the last row). Shading (colours) is drawing and lives in
:mod:`gem_app.viz.density`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gem_app.utils.ordering import natural_key
from gem_app.utils.validation import check_int

__all__ = ["DensityRaster", "category_codes", "density_raster", "lonlat_pixels"]


@dataclass(frozen=True)
class DensityRaster:
    """Documents per (latitude, longitude) pixel.

    Attributes
    ----------
    counts : ndarray of int64, shape (height, width)
        Row 0 is the northernmost band (lat 90), column 0 starts at lon -180.
    by_category : ndarray of int64, shape (n_categories, height, width), or None
    value_sum : ndarray of float64, shape (height, width), or None
    """

    counts: np.ndarray
    by_category: np.ndarray | None = None
    value_sum: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.counts.shape)

    @property
    def value_mean(self) -> np.ndarray | None:
        """Mean value per pixel, NaN where a pixel is empty, or None without values."""
        if self.value_sum is None:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.value_sum / self.counts, np.nan)


def lonlat_pixels(lon, lat, width: int, height: int) -> np.ndarray:
    """Flat pixel index ``row * width + column`` of each (lon, lat) in degrees, shape (n,).

    Longitudes are taken modulo 360 into [-180, 180); latitudes are clipped to [-90, 90].
    """
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    if lon.ndim != 1 or lon.shape != lat.shape:
        raise ValueError(f"lon {lon.shape} and lat {lat.shape} must be 1-D of one length")
    bad = ~(np.isfinite(lon) & np.isfinite(lat))
    if bad.any():
        raise ValueError(f"non-finite position at row {int(np.flatnonzero(bad)[0])}")
    col = np.floor(np.mod(lon + 180.0, 360.0) * (width / 360.0)).astype(np.int64)
    row = np.floor((90.0 - np.clip(lat, -90.0, 90.0)) * (height / 180.0)).astype(np.int64)
    return np.minimum(row, height - 1) * width + np.minimum(col, width - 1)


def density_raster(
    lon,
    lat,
    *,
    categories=None,
    n_categories: int | None = None,
    values=None,
    width: int = 360,
    height: int = 180,
) -> DensityRaster:
    """Bin every document into an equirectangular raster.

    Parameters
    ----------
    lon, lat : array-like of shape (n,)
        Degrees (:func:`gem_app.app.projection.sphere_to_lonlat` of the layout).
    categories : array-like of int, shape (n,), optional
        Category of each document in ``0 .. n_categories - 1`` (cluster id, coded human
        category); fills ``by_category``.
    n_categories : int, optional
        Number of categories (default: ``max(categories) + 1``).
    values : array-like of float, shape (n,), optional
        A finite number per document; fills ``value_sum``.
    width, height : int >= 1
        Pixels in longitude and latitude.

    Returns
    -------
    DensityRaster
    """
    width = check_int(width, "width", minimum=1)
    height = check_int(height, "height", minimum=1)
    pixel = lonlat_pixels(lon, lat, width, height)
    n, size = pixel.shape[0], width * height
    counts = np.bincount(pixel, minlength=size).reshape(height, width)
    by_category = None
    if categories is not None:
        cat = np.asarray(categories)
        if cat.shape != (n,) or (n and cat.dtype.kind not in "iu"):
            raise ValueError(
                f"categories must be integers of shape ({n},), got {cat.dtype} {cat.shape}"
            )
        cat = cat.astype(np.int64)
        if n_categories is None:
            n_categories = int(cat.max()) + 1 if n else 1
        n_categories = check_int(n_categories, "n_categories", minimum=1)
        if n and (cat.min() < 0 or cat.max() >= n_categories):
            raise ValueError(
                f"categories must be in 0..{n_categories - 1}, got {cat.min()}..{cat.max()}"
            )
        by_category = np.bincount(cat * size + pixel, minlength=n_categories * size).reshape(
            n_categories, height, width
        )
    value_sum = None
    if values is not None:
        vals = np.asarray(values, dtype=np.float64)
        if vals.shape != (n,):
            raise ValueError(f"values has shape {vals.shape}, expected ({n},)")
        if not np.all(np.isfinite(vals)):
            raise ValueError(
                f"values must be finite; row {int(np.flatnonzero(~np.isfinite(vals))[0])} is not"
            )
        value_sum = np.bincount(pixel, weights=vals, minlength=size).reshape(height, width)
    return DensityRaster(counts=counts, by_category=by_category, value_sum=value_sum)


def category_codes(values) -> tuple[np.ndarray, list[str]]:
    """Integer codes of categorical values and the categories in natural order.

    The order is the one of the map's point colours: integer-like names by value first
    ("2" before "10"), then the others alphabetically.

    Returns
    -------
    codes : ndarray of int64, shape (n,)
    categories : list of str, ``categories[codes[i]] == str(values[i])``
    """
    text = np.asarray(values).astype(str)
    unique, inverse = np.unique(text, return_inverse=True)
    order = sorted(range(len(unique)), key=lambda i: natural_key(str(unique[i])))
    rank = np.empty(len(unique), dtype=np.int64)
    rank[order] = np.arange(len(unique))
    return rank[inverse.reshape(-1)], [str(unique[i]) for i in order]
