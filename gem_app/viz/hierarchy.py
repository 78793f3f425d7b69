"""A taxonomy as a sunburst and a treemap (size = tokens, colour = GIS or purity).

Both take a node table with one row per node: ``id``, ``parent`` (empty or None for
the root), ``label``, ``tokens`` (tokens of the node's subtree, so a parent equals the
sum of its children) and a numeric colour column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from gem_app.viz.style import finish

_REQUIRED = ("id", "parent", "label", "tokens")


def _node_arrays(nodes: pd.DataFrame, colour: str):
    missing = [c for c in (*_REQUIRED, colour) if c not in nodes.columns]
    if missing:
        raise ValueError(f"node table lacks column(s) {missing}; it has {list(nodes.columns)}")
    if len(nodes) == 0:
        raise ValueError("node table is empty")
    ids = nodes["id"].astype(str).tolist()
    known = set(ids)
    parents = [
        "" if p is None or (isinstance(p, float) and np.isnan(p)) else str(p)
        for p in nodes["parent"]
    ]
    for node, parent in zip(ids, parents, strict=True):
        if parent and parent not in known:
            raise ValueError(f"node {node!r} has parent {parent!r}, which is not in the table")
    values = nodes["tokens"].to_numpy(dtype=float)
    if np.any(values < 0) or not np.all(np.isfinite(values)):
        raise ValueError("tokens must be finite and >= 0")
    labels = [str(s) for s in nodes["label"]]
    return ids, parents, labels, values, nodes[colour].to_numpy(dtype=float)


def _hierarchy_figure(kind, nodes, colour, colour_title, height):
    ids, parents, labels, values, colours = _node_arrays(nodes, colour)
    # the colour scale spans the clusters, not the root (whose GIS is the sum of theirs)
    inner = colours[[bool(p) for p in parents]]
    inner = inner[np.isfinite(inner)]
    scale = (float(inner.min()), float(inner.max())) if len(inner) else (0.0, 1.0)
    trace = getattr(go, kind)(
        ids=ids,
        parents=parents,
        labels=labels,
        values=values,
        branchvalues="total",
        marker={
            "colors": colours,
            "colorscale": "Viridis",
            "cmin": scale[0],
            "cmax": scale[1] if scale[1] > scale[0] else scale[0] + 1e-9,
            "showscale": True,
            "colorbar": {"title": {"text": colour_title}, "thickness": 12},
        },
        customdata=np.column_stack([colours]),
        hovertemplate=(
            "<b>%{label}</b><br>tokens: %{value:,.0f}<br>"
            f"{colour_title}: " + "%{customdata[0]:.3f}<extra></extra>"
        ),
        maxdepth=3,
    )
    return finish(go.Figure(trace), height=height)


def sunburst_figure(
    nodes: pd.DataFrame, *, colour: str = "gis", colour_title: str = "GIS (nats)", height: int = 560
) -> go.Figure:
    """Sunburst of the node table (see the module docstring)."""
    return _hierarchy_figure("Sunburst", nodes, colour, colour_title, height)


def treemap_figure(
    nodes: pd.DataFrame, *, colour: str = "gis", colour_title: str = "GIS (nats)", height: int = 560
) -> go.Figure:
    """Treemap of the node table (see the module docstring)."""
    return _hierarchy_figure("Treemap", nodes, colour, colour_title, height)
