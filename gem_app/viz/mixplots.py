"""Mixing figures: natural vs chosen weights, epochs per cluster, masses moving with T and lambda."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from gem_app.viz.style import finish


def _names(labels, K):
    if labels is None:
        return [str(k) for k in range(K)]
    if len(labels) != K:
        raise ValueError(f"labels has {len(labels)} entries, expected {K}")
    return [f"{k}: {str(s)[:26]}" for k, s in enumerate(labels)]


def _pair(a, b, what):
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"{what}: shapes {a.shape} and {b.shape} must be equal 1-D")
    return a, b


def weights_figure(natural, chosen, labels: Sequence[str] | None = None) -> go.Figure:
    """Grouped horizontal bars: natural share rho_k and chosen weight w_k per cluster.

    Clusters are ordered by natural share (largest first).
    """
    natural, chosen = _pair(natural, chosen, "weights_figure")
    names = _names(labels, natural.size)
    order = np.argsort(-natural, kind="stable")
    ticks = [names[k] for k in order]
    fig = go.Figure(
        [
            go.Bar(
                y=ticks,
                x=natural[order],
                orientation="h",
                name="natural ρ",
                marker_color="#b8c2cc",
                hovertemplate="%{y}<br>ρ = %{x:.4f}<extra></extra>",
            ),
            go.Bar(
                y=ticks,
                x=chosen[order],
                orientation="h",
                name="chosen w",
                marker_color="#3b6fb6",
                hovertemplate="%{y}<br>w = %{x:.4f}<extra></extra>",
            ),
        ]
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="share of training tokens")
    fig.update_layout(barmode="group", legend={"orientation": "h", "y": 1.06, "x": 0})
    return finish(fig, height=max(320, 26 * natural.size + 80))


def epochs_figure(
    epochs, labels: Sequence[str] | None = None, *, max_epochs: float | None = None
) -> go.Figure:
    """Epochs (passes over its tokens) per cluster, with the cap as a dashed line."""
    epochs = np.asarray(epochs, dtype=float)
    if epochs.ndim != 1:
        raise ValueError(f"epochs must be 1-D, got {epochs.shape}")
    names = _names(labels, epochs.size)
    fig = go.Figure(
        go.Bar(
            x=names,
            y=epochs,
            marker_color="#5b8e7d",
            hovertemplate="%{x}<br>%{y:.2f} epochs<extra></extra>",
        )
    )
    if max_epochs is not None:
        fig.add_hline(
            y=max_epochs,
            line_dash="dash",
            line_color="#d1495b",
            annotation_text=f"cap {max_epochs:g}",
        )
    fig.update_yaxes(title="epochs")
    fig.update_xaxes(tickangle=-45, tickfont={"size": 10})
    return finish(fig, height=340)


def masses_shift_figure(fitted, moved, labels: Sequence[str] | None = None) -> go.Figure:
    """Cluster masses at the fit's T and lambda against masses after a frozen-geometry q-step."""
    fitted, moved = _pair(fitted, moved, "masses_shift_figure")
    names = _names(labels, fitted.size)
    fig = go.Figure(
        [
            go.Bar(x=names, y=fitted, name="fitted", marker_color="#b8c2cc"),
            go.Bar(x=names, y=moved, name="re-assigned", marker_color="#e07a5f"),
        ]
    )
    fig.add_hline(
        y=1.0 / fitted.size, line_dash="dot", line_color="#6c757d", annotation_text="uniform"
    )
    fig.update_layout(barmode="group", legend={"orientation": "h", "y": 1.08, "x": 0})
    fig.update_yaxes(title="mass ρ")
    fig.update_xaxes(tickangle=-45, tickfont={"size": 10})
    return finish(fig, height=360)
