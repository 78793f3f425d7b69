"""The projected hypersphere: a 3D globe (Scatter3d over a translucent sphere) and a 2D map.

Both take points already projected to the unit 2-sphere (see :mod:`gem_app.app.projection`)
and already capped to a bounded number (the caller samples). Colour is either a
category per point (cluster id, human category: one colour per category from the
cluster palette) or a number per point (GIS, weight: a continuous colour scale).
Every point carries ``customdata = [row, cluster]`` so a selection maps back to documents.

Under the points, both figures can show every document: the 2D map takes a density image
(a PNG data URI from :mod:`gem_app.viz.density`, drawn as a layout image below the traces),
the globe colours its sphere by a raster of counts. Search hits are drawn on top as stars
(trace ``"search hits"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from gem_app.utils.ordering import natural_key
from gem_app.viz.density import density_layout_image, globe_density_surface
from gem_app.viz.style import cluster_palette, finish

_SPHERE_STEPS = 36


def _check_points(xyz, n_expected=None, name="xyz") -> np.ndarray:
    xyz = np.asarray(xyz, dtype=float)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n, 3), got {xyz.shape}")
    if n_expected is not None and xyz.shape[0] != n_expected:
        raise ValueError(f"{name} has {xyz.shape[0]} rows, expected {n_expected}")
    return xyz


def _colour_spec(colour, n: int, colour_title: str, categories=None):
    """marker kwargs: categorical -> explicit colours, numeric -> a colour scale.

    ``categories`` fixes the palette order (all categories of the corpus, so that the density
    layer and the points agree); by default the categories present, in natural order.
    """
    values = np.asarray(colour)
    if values.shape != (n,):
        raise ValueError(f"colour has shape {values.shape}, expected ({n},)")
    if values.dtype.kind in "fc":
        return {
            "color": values.astype(float),
            "colorscale": "Viridis",
            "showscale": True,
            "colorbar": {"title": {"text": colour_title}, "thickness": 12, "len": 0.6},
        }, [f"{v:.3g}" for v in values.astype(float)]
    as_text = values.astype(str)
    if categories is None:
        categories = sorted(set(as_text.tolist()), key=natural_key)
    categories = [str(c) for c in categories]
    missing = set(as_text.tolist()) - set(categories)
    if missing:
        raise ValueError(f"colour values {sorted(missing)[:3]} are not in categories")
    palette = dict(zip(categories, cluster_palette(len(categories)), strict=True))
    return {"color": [palette[c] for c in as_text]}, as_text.tolist()


def _hover(snippets, colour_text, n, colour_title):
    if snippets is None:
        snippets = [""] * n
    if len(snippets) != n:
        raise ValueError(f"hover has {len(snippets)} entries, expected {n}")
    return [
        f"<b>{colour_title}: {c}</b><br>{_wrap(str(s))}"
        for s, c in zip(snippets, colour_text, strict=True)
    ]


def _wrap(text: str, width: int = 60, max_chars: int = 180) -> str:
    text = text[:max_chars] + ("…" if len(text) > max_chars else "")
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "<br>".join(lines)


def _customdata(rows, clusters, n):
    rows = np.arange(n) if rows is None else np.asarray(rows)
    clusters = np.full(n, -1) if clusters is None else np.asarray(clusters)
    if rows.shape != (n,) or clusters.shape != (n,):
        raise ValueError("rows and clusters must have one entry per point")
    return np.column_stack([rows, clusters]).astype(np.int32)  # 4 bytes a number to the browser


def globe_figure(
    xyz,
    colour,
    *,
    hover: Sequence[str] | None = None,
    rows=None,
    clusters=None,
    centres=None,
    centre_labels: Sequence[str] | None = None,
    colour_title: str = "cluster",
    categories: Sequence[str] | None = None,
    density_counts=None,
    highlight_xyz=None,
    highlight_text: Sequence[str] | None = None,
    height: int = 640,
) -> go.Figure:
    """Points on the unit sphere as a 3D globe over a translucent sphere.

    Parameters
    ----------
    xyz : ndarray of shape (n, 3), unit rows
    colour : array-like of shape (n,): categories (int/str) or numbers (float)
    hover : sequence of str, length n, optional (text snippets)
    rows, clusters : array-like of shape (n,), optional; stored as customdata
    centres : ndarray of shape (K, 3), optional; where cluster labels are drawn
    centre_labels : sequence of str, length K
    categories : sequence of str, optional
        Palette order of categorical colours (default: the categories present, natural order).
    density_counts : ndarray of shape (H, W), optional
        Documents per (lat, lon) pixel of every document: the sphere is shaded by it.
    highlight_xyz : ndarray of shape (m, 3), optional; drawn as stars (search hits)
    highlight_text : sequence of str, length m, optional
    """
    xyz = _check_points(xyz)
    n = xyz.shape[0]
    marker, colour_text = _colour_spec(colour, n, colour_title, categories)
    u, v = np.meshgrid(
        np.linspace(0, 2 * np.pi, _SPHERE_STEPS), np.linspace(0, np.pi, _SPHERE_STEPS // 2)
    )
    r = 0.985
    if density_counts is not None:
        fig = go.Figure(globe_density_surface(density_counts, radius=r))
    else:
        fig = go.Figure(
            go.Surface(
                x=r * np.cos(u) * np.sin(v),
                y=r * np.sin(u) * np.sin(v),
                z=r * np.cos(v),
                opacity=0.18,
                showscale=False,
                hoverinfo="skip",
                colorscale=[[0, "#dfe7f2"], [1, "#dfe7f2"]],
                name="sphere",
            )
        )
    fig.add_trace(
        go.Scatter3d(
            x=xyz[:, 0].astype(np.float32),  # float32: half the bytes, ample for a screen
            y=xyz[:, 1].astype(np.float32),
            z=xyz[:, 2].astype(np.float32),
            mode="markers",
            name="documents",
            marker={**marker, "size": 2.2 if n > 5000 else 3, "opacity": 0.85},
            text=_hover(hover, colour_text, n, colour_title),
            hoverinfo="text",
            customdata=_customdata(rows, clusters, n),
        )
    )
    if centres is not None:
        centres = _check_points(centres, name="centres")
        labels = _centre_text(centre_labels, centres.shape[0])
        keep = np.all(np.isfinite(centres), axis=1)
        c = centres[keep] * 1.06
        fig.add_trace(
            go.Scatter3d(
                x=c[:, 0],
                y=c[:, 1],
                z=c[:, 2],
                mode="text",
                name="labels",
                text=[t for t, k in zip(labels, keep, strict=True) if k],
                textfont={"size": 11, "color": "#1d2733"},
                hoverinfo="skip",
            )
        )
    if highlight_xyz is not None:
        hits = _check_points(highlight_xyz, name="highlight_xyz") * 1.01
        fig.add_trace(
            go.Scatter3d(
                x=hits[:, 0],
                y=hits[:, 1],
                z=hits[:, 2],
                mode="markers",
                name="search hits",
                marker=_HIT_MARKER | {"size": 5, "symbol": "diamond"},  # no stars in 3D
                text=_hit_text(highlight_text, hits.shape[0]),
                hoverinfo="text",
            )
        )
    axis = {"visible": False, "showbackground": False, "range": [-1.15, 1.15]}
    fig.update_layout(
        scene={
            "xaxis": axis,
            "yaxis": axis,
            "zaxis": axis,
            "aspectmode": "cube",
            "camera": {"eye": {"x": 1.35, "y": 1.35, "z": 0.9}},
        },
        showlegend=False,
        uirevision="globe",
    )
    return finish(fig, height=height)


_HIT_MARKER = {"symbol": "star", "color": "#ffd400", "line": {"color": "#1d2733", "width": 1}}


def _hit_text(texts, m: int) -> list[str]:
    if texts is None:
        return [""] * m
    if len(texts) != m:
        raise ValueError(f"highlight_text has {len(texts)} entries, expected {m}")
    return [_wrap(str(t)) for t in texts]


def _centre_text(centre_labels, K):
    if centre_labels is None:
        return [str(k) for k in range(K)]
    if len(centre_labels) != K:
        raise ValueError(f"centre_labels has {len(centre_labels)} entries, expected {K}")
    return [str(s) for s in centre_labels]


def flat_map_figure(
    lon,
    lat,
    colour,
    *,
    hover: Sequence[str] | None = None,
    rows=None,
    clusters=None,
    centres_lonlat=None,
    centre_labels: Sequence[str] | None = None,
    colour_title: str = "cluster",
    categories: Sequence[str] | None = None,
    density_image: str | None = None,
    highlight_lonlat=None,
    highlight_text: Sequence[str] | None = None,
    height: int = 560,
) -> go.Figure:
    """The sphere unrolled (longitude, latitude in degrees) as a WebGL scatter.

    Parameters
    ----------
    lon, lat : array-like of shape (n,), degrees
    colour : array-like of shape (n,)
    centres_lonlat : ndarray of shape (K, 2), optional (label positions)
    categories : sequence of str, optional
        Palette order of categorical colours (default: the categories present, natural order).
    density_image : str, optional
        A PNG data URI of every document's density (lon -180..180 left to right, lat 90 at
        the top), drawn under the points.
    highlight_lonlat : ndarray of shape (m, 2), optional; drawn as stars (search hits)
    highlight_text : sequence of str, length m, optional
    """
    lon = np.asarray(lon, dtype=float)
    lat = np.asarray(lat, dtype=float)
    if lon.shape != lat.shape or lon.ndim != 1:
        raise ValueError(f"lon {lon.shape} and lat {lat.shape} must be equal 1-D")
    n = lon.size
    marker, colour_text = _colour_spec(colour, n, colour_title, categories)
    fig = go.Figure(
        go.Scattergl(
            x=lon.astype(np.float32),  # float32: half the bytes, ample for a screen
            y=lat.astype(np.float32),
            mode="markers",
            name="documents",
            marker={**marker, "size": 4 if n > 5000 else 5, "opacity": 0.8},
            text=_hover(hover, colour_text, n, colour_title),
            hoverinfo="text",
            customdata=_customdata(rows, clusters, n),
        )
    )
    if centres_lonlat is not None:
        centres = np.asarray(centres_lonlat, dtype=float)
        if centres.ndim != 2 or centres.shape[1] != 2:
            raise ValueError(f"centres_lonlat must have shape (K, 2), got {centres.shape}")
        labels = _centre_text(centre_labels, centres.shape[0])
        keep = np.all(np.isfinite(centres), axis=1)
        fig.add_trace(
            go.Scatter(
                x=centres[keep, 0],
                y=centres[keep, 1],
                mode="text",
                name="labels",
                text=[t for t, k in zip(labels, keep, strict=True) if k],
                textfont={"size": 11, "color": "#1d2733"},
                hoverinfo="skip",
            )
        )
    if highlight_lonlat is not None:
        hits = np.asarray(highlight_lonlat, dtype=float).reshape(-1, 2)
        fig.add_trace(
            go.Scatter(
                x=hits[:, 0],
                y=hits[:, 1],
                mode="markers",
                name="search hits",
                marker=_HIT_MARKER | {"size": 13},
                text=_hit_text(highlight_text, hits.shape[0]),
                hoverinfo="text",
            )
        )
    if density_image is not None:
        fig.add_layout_image(density_layout_image(density_image))
    fig.update_xaxes(range=[-180, 180], title="longitude", showgrid=True, zeroline=False)
    fig.update_yaxes(range=[-90, 90], title="latitude", showgrid=True, zeroline=False)
    fig.update_layout(showlegend=False, dragmode="select", uirevision="map")
    return finish(fig, height=height)
