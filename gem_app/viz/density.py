"""Shading a density raster (counts per pixel, see :mod:`gem_app.app.density`) into an image.

Three shadings, each an RGBA array of shape (height, width, 4), uint8:

- :func:`shade_counts`: one ink colour, opacity rising with log(1 + count);
- :func:`shade_categories`: per pixel, the count-weighted blend of its categories' colours
  (the cluster palette of the points), opacity by log count;
- :func:`shade_values`: the pixel's mean value on the Viridis scale of the points.

The 2D map draws the image as a PNG in a layout image under the points
(:func:`density_layout_image`: a few tens of kB instead of one number per document); the
globe colours its sphere by log count (:func:`globe_density_surface`).
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, sequential

__all__ = [
    "density_layout_image",
    "globe_density_surface",
    "png_data_uri",
    "shade_categories",
    "shade_counts",
    "shade_values",
]

INK = (31, 59, 102)
_MIN_ALPHA, _MAX_ALPHA = 0.22, 0.85


def _alpha(counts: np.ndarray) -> np.ndarray:
    """Opacity per pixel in [0, 1]: 0 when empty, else ``_MIN + (_MAX - _MIN) * log1p(c)/log1p(max)``."""
    counts = np.asarray(counts, dtype=np.float64)
    top = np.log1p(counts.max()) if counts.size and counts.max() > 0 else 1.0
    alpha = _MIN_ALPHA + (_MAX_ALPHA - _MIN_ALPHA) * np.log1p(counts) / top
    return np.where(counts > 0, alpha, 0.0)


def _rgba(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    out = np.concatenate([rgb, alpha[..., None] * 255.0], axis=-1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def shade_counts(counts, colour=INK) -> np.ndarray:
    """Counts (H, W) -> RGBA (H, W, 4): one colour, opacity by log count."""
    counts = np.asarray(counts)
    rgb = np.broadcast_to(np.asarray(colour, dtype=np.float64), (*counts.shape, 3))
    return _rgba(rgb, _alpha(counts))


def shade_categories(by_category, colours) -> np.ndarray:
    """Counts per category (C, H, W) -> RGBA (H, W, 4): count-weighted blend of the colours.

    Parameters
    ----------
    by_category : ndarray of shape (C, H, W)
    colours : sequence of C '#rrggbb' strings (the points' palette, in category order)
    """
    by_category = np.asarray(by_category, dtype=np.float64)
    if by_category.ndim != 3 or len(colours) != by_category.shape[0]:
        raise ValueError(
            f"by_category {by_category.shape} needs one colour per category, got {len(colours)}"
        )
    palette = np.array([hex_to_rgb(c) for c in colours], dtype=np.float64).reshape(-1, 3)
    counts = by_category.sum(axis=0)
    blend = np.einsum("chw,cr->hwr", by_category, palette)
    rgb = blend / np.maximum(counts, 1.0)[..., None]
    return _rgba(rgb, _alpha(counts))


def _viridis(t: np.ndarray) -> np.ndarray:
    stops = np.array([hex_to_rgb(c) for c in sequential.Viridis], dtype=np.float64)
    grid = np.linspace(0.0, 1.0, len(stops))
    return np.stack([np.interp(t, grid, stops[:, j]) for j in range(3)], axis=-1)


def shade_values(mean, counts, *, vmin=None, vmax=None) -> np.ndarray:
    """Mean value per pixel (H, W; NaN where empty) -> RGBA on the Viridis scale."""
    mean = np.asarray(mean, dtype=np.float64)
    counts = np.asarray(counts)
    finite = np.isfinite(mean)
    lo = float(np.nanmin(mean)) if vmin is None and finite.any() else float(vmin or 0.0)
    hi = float(np.nanmax(mean)) if vmax is None and finite.any() else float(vmax or 1.0)
    t = np.where(finite, (mean - lo) / (hi - lo) if hi > lo else 0.5, 0.0)
    return _rgba(_viridis(np.clip(t, 0.0, 1.0)), _alpha(np.where(finite, counts, 0)))


def png_data_uri(rgba) -> str:
    """An RGBA uint8 image (H, W, 4) as a ``data:image/png;base64,`` URI (zlib, no filter)."""
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"rgba must have shape (H, W, 4), got {rgba.shape}")
    height, width = rgba.shape[:2]
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rgba.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def density_layout_image(source: str) -> dict:
    """A plotly layout image covering lon [-180, 180] x lat [-90, 90] under the traces."""
    return {
        "source": source,
        "xref": "x",
        "yref": "y",
        "x": -180,
        "y": 90,
        "sizex": 360,
        "sizey": 180,
        "sizing": "stretch",
        "layer": "below",
        "name": "density",
    }


def globe_density_surface(counts, *, radius: float = 0.985) -> go.Surface:
    """The globe's sphere coloured by log(1 + documents) of an equirectangular raster (H, W)."""
    counts = np.asarray(counts, dtype=np.float64)
    height, width = counts.shape
    lon = np.radians(np.linspace(-180.0, 180.0, width + 1))
    lat = np.radians(np.linspace(90.0, -90.0, height + 1))
    lo, la = np.meshgrid(lon, lat)
    # surfacecolor per vertex: the pixel below-right of it (edges padded)
    padded = np.pad(np.log1p(counts), ((0, 1), (0, 1)), mode="edge")
    return go.Surface(
        x=radius * np.cos(la) * np.cos(lo),
        y=radius * np.cos(la) * np.sin(lo),
        z=radius * np.sin(la),
        surfacecolor=padded,
        colorscale=[[0.0, "#eef2f8"], [0.35, "#9fb4d3"], [1.0, "#1f3b66"]],
        cmin=0.0,
        opacity=0.55,
        showscale=False,
        hoverinfo="skip",
        name="density",
    )
