"""Figures of a fit: the objective trace, masses and concentrations, the automatic K sweep."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gem_app.viz.style import cluster_palette, finish


def objective_figure(history: Sequence[float]) -> go.Figure:
    """The objective J after every half-step of the MM algorithm.

    Parameters
    ----------
    history : sequence of float, length n_steps (``GEM.objective_history_``)
    """
    values = np.asarray(history, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("history must be a non-empty 1-D sequence of objective values")
    fig = go.Figure(
        go.Scatter(
            x=np.arange(values.size),
            y=values,
            mode="lines+markers",
            line={"color": "#3b6fb6", "width": 2},
            marker={"size": 4},
            hovertemplate="half-step %{x}<br>J = %{y:.6g}<extra></extra>",
        )
    )
    fig.update_xaxes(title="MM half-step")
    fig.update_yaxes(title="objective J (nats)")
    return finish(fig, title="Objective (never decreases)", height=320)


def masses_figure(masses, concentrations, labels: Sequence[str] | None = None) -> go.Figure:
    """Cluster masses rho_k (bars) and concentrations kappa_k (bars), largest mass first.

    Parameters
    ----------
    masses, concentrations : array-like of shape (K,)
    labels : sequence of str of length K, optional
    """
    rho = np.asarray(masses, dtype=float)
    kappa = np.asarray(concentrations, dtype=float)
    if rho.shape != kappa.shape or rho.ndim != 1:
        raise ValueError(f"masses {rho.shape} and concentrations {kappa.shape} must be equal 1-D")
    K = rho.size
    names = [f"{k}" for k in range(K)] if labels is None else [str(s) for s in labels]
    if len(names) != K:
        raise ValueError(f"labels has {len(names)} entries, expected {K}")
    order = np.argsort(-rho, kind="stable")
    colours = cluster_palette(K)
    ticks = [f"{k}: {names[k][:28]}" for k in order]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("mass ρ", "concentration κ"),
        shared_yaxes=True,
        horizontal_spacing=0.04,
    )
    fig.add_trace(
        go.Bar(
            y=ticks,
            x=rho[order],
            orientation="h",
            name="mass",
            marker_color=[colours[k] for k in order],
            hovertemplate="%{y}<br>ρ = %{x:.4f}<extra></extra>",
        ),
        1,
        1,
    )
    fig.add_trace(
        go.Bar(
            y=ticks,
            x=kappa[order],
            orientation="h",
            name="kappa",
            marker_color="#8a8f98",
            hovertemplate="%{y}<br>κ = %{x:.1f}<extra></extra>",
        ),
        1,
        2,
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(showlegend=False, bargap=0.25)
    return finish(fig, height=max(300, 22 * K + 80))


def sweep_figure(ks, values, *, chosen: int | None = None, metric: str = "score") -> go.Figure:
    """A curve of a model-selection score against K, with the chosen K marked.

    Parameters
    ----------
    ks : array-like of int, shape (n,)
    values : array-like of float, shape (n,)
    chosen : int, optional
    metric : str, the y axis title
    """
    ks = np.asarray(ks)
    values = np.asarray(values, dtype=float)
    if ks.shape != values.shape or ks.ndim != 1 or ks.size == 0:
        raise ValueError(f"ks {ks.shape} and values {values.shape} must be equal non-empty 1-D")
    fig = go.Figure(
        go.Scatter(x=ks, y=values, mode="lines+markers", name=metric, line={"color": "#3b6fb6"})
    )
    if chosen is not None:
        hit = np.flatnonzero(ks == chosen)
        if hit.size == 0:
            raise ValueError(f"chosen K={chosen} is not among the swept values {ks.tolist()}")
        fig.add_trace(
            go.Scatter(
                x=[chosen],
                y=[values[hit[0]]],
                mode="markers",
                name="chosen",
                marker={"size": 14, "color": "#d1495b", "symbol": "star"},
            )
        )
    fig.update_xaxes(title="K (clusters)")
    fig.update_yaxes(title=metric)
    return finish(fig, title="Automatic K sweep", height=320)
