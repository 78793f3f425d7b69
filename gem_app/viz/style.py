"""Shared look: a cluster palette and the layout defaults of every figure."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.colors import qualitative

_BASE = qualitative.Dark24 + qualitative.Light24 + qualitative.Alphabet
FONT = "Inter, Segoe UI, Helvetica, Arial, sans-serif"


def cluster_palette(n_clusters: int) -> list[str]:
    """``n_clusters`` distinct colours (cycled past 82), as '#rrggbb' strings."""
    if n_clusters < 0:
        raise ValueError(f"n_clusters must be >= 0, got {n_clusters}")
    return [_BASE[k % len(_BASE)] for k in range(n_clusters)]


def finish(fig: go.Figure, *, title: str | None = None, height: int = 420) -> go.Figure:
    """Apply the house layout (white template, compact margins, one font)."""
    fig.update_layout(
        template="plotly_white",
        title=None if title is None else {"text": title, "x": 0.0, "font": {"size": 15}},
        height=height,
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        font={"family": FONT, "size": 12},
    )
    return fig
