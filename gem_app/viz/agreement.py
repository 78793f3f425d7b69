"""Clusters against a human taxonomy: the aligned contingency heatmap and a Sankey diagram."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from gem_app.viz.style import cluster_palette, finish


def _check_table(table: pd.DataFrame) -> np.ndarray:
    if not isinstance(table, pd.DataFrame) or table.size == 0:
        raise ValueError("the contingency table must be a non-empty DataFrame")
    values = table.to_numpy(dtype=float)
    if np.any(values < 0) or not np.all(np.isfinite(values)):
        raise ValueError("contingency table entries must be finite and >= 0")
    return values


def contingency_heatmap(
    table: pd.DataFrame, *, cluster_labels=None, normalise: str = "row", height: int | None = None
) -> go.Figure:
    """Heatmap of a (categories x clusters) table, rows normalised to shares by default.

    Parameters
    ----------
    table : DataFrame of shape (n_categories, n_clusters)
        E.g. ``ComparisonResult.aligned_table`` (matches on the diagonal).
    cluster_labels : mapping cluster id -> str, optional (column tick text)
    normalise : {"row", "none"}
    """
    values = _check_table(table)
    if normalise == "row":
        totals = values.sum(axis=1, keepdims=True)
        z = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
        title = "share of category"
    elif normalise == "none":
        z, title = values, "mass"
    else:
        raise ValueError(f"normalise must be 'row' or 'none', got {normalise!r}")
    names = cluster_labels or {}
    columns = [f"{c}: {str(names.get(c, ''))[:18]}".rstrip(": ") for c in table.columns]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=columns,
            y=[str(i) for i in table.index],
            colorscale="Blues",
            colorbar={"title": {"text": title}, "thickness": 12},
            customdata=values,
            hovertemplate="category %{y}<br>cluster %{x}<br>share %{z:.3f}<br>mass %{customdata:,.0f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", tickfont={"size": 10})
    fig.update_xaxes(tickangle=-45, tickfont={"size": 10})
    return finish(fig, height=height or max(420, 14 * table.shape[0] + 160))


def sankey_figure(
    table: pd.DataFrame, *, cluster_labels=None, min_share: float = 0.02, height: int = 620
) -> go.Figure:
    """Flows from human categories (left) to clusters (right).

    Links smaller than ``min_share`` of the total mass are dropped to keep it readable.
    """
    values = _check_table(table)
    if not 0 <= min_share < 1:
        raise ValueError(f"min_share must be in [0, 1), got {min_share}")
    n_cat, n_clu = values.shape
    names = cluster_labels or {}
    node_labels = [str(c) for c in table.index] + [
        f"{c}: {str(names.get(c, ''))[:24]}".rstrip(": ") for c in table.columns
    ]
    total = values.sum()
    src, dst = np.nonzero(values >= min_share * total)
    palette = cluster_palette(n_clu)
    fig = go.Figure(
        go.Sankey(
            arrangement="snap",
            node={
                "label": node_labels,
                "pad": 6,
                "thickness": 14,
                "color": ["#9aa5b1"] * n_cat + palette,
            },
            link={
                "source": src.tolist(),
                "target": (n_cat + dst).tolist(),
                "value": values[src, dst].tolist(),
                "color": [_fade(palette[j]) for j in dst],
            },
        )
    )
    return finish(fig, height=height)


def _fade(hex_colour: str, alpha: float = 0.35) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"
