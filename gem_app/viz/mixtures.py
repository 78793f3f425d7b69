"""Named mixtures side by side: weights per domain and the numbers that tell mixtures apart.

One figure, two rows. Top: the weight of every domain under each mixture (grouped bars), the
natural shares in grey behind them. Bottom, one small panel each: the entropy H(w), the
effective number of domains exp H(w), KL(w ‖ natural), and the most epochs any domain is
read under the mixture's budget, with the mixture's epoch cap as a marker. The values are
computed elsewhere (:mod:`gem_app.app.mixes`); this module only draws them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gem_app.viz.style import cluster_palette, finish

__all__ = ["EPOCH_CAP", "METRIC_PANELS", "NATURAL", "mixtures_figure"]

# trace name -> panel title of the bottom row, in order (the traces carry these names)
METRIC_PANELS = {
    "entropy": "Entropy H(w), nats",
    "effective_domains": "Effective domains exp H",
    "kl_to_natural": "KL(w ‖ natural), nats",
    "largest_epochs": "Most epochs of a domain",
}
NATURAL = "natural shares"
EPOCH_CAP = "epoch_cap"


def _vector(values, n: int, what: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n,):
        raise ValueError(f"{what} has shape {values.shape}, expected ({n},)")
    return values


def mixtures_figure(
    names: Sequence[str],
    domains: Sequence[str],
    weights,
    natural,
    *,
    entropy,
    effective_domains,
    kl_to_natural,
    largest_epochs,
    epoch_cap,
) -> go.Figure:
    """Several mixtures over the same domains on one chart.

    Parameters
    ----------
    names : sequence of str, length M
        The mixtures' names (legend, x axis of the bottom panels).
    domains : sequence of str, length D
        Domain labels (x axis of the top panel), in the order of the weight columns.
    weights : array-like of shape (M, D)
        ``weights[m, k]``: the share of domain k under mixture m.
    natural : array-like of shape (D,)
        The natural (token) shares of the domains.
    entropy, effective_domains, kl_to_natural : array-like of shape (M,)
        ``H(w)`` and ``exp H(w)`` in nats, ``KL(w ‖ natural)`` in nats.
    largest_epochs : array-like of shape (M,)
        ``max_k`` epochs of domain k at the mixture's budget.
    epoch_cap : array-like of shape (M,)
        The mixture's cap on epochs, NaN where it has none.

    Returns
    -------
    plotly.graph_objects.Figure
        Top-panel traces are named ``"natural shares"`` and after each mixture; bottom-panel traces
        after the keys of :data:`METRIC_PANELS` and ``"epoch_cap"``.
    """
    names = [str(n) for n in names]
    domains = [str(d) for d in domains]
    M, D = len(names), len(domains)
    if M == 0 or D == 0:
        raise ValueError("mixtures_figure needs at least one mixture and one domain")
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (M, D):
        raise ValueError(f"weights has shape {weights.shape}, expected ({M}, {D})")
    natural = _vector(natural, D, "natural")
    panels = {
        "entropy": _vector(entropy, M, "entropy"),
        "effective_domains": _vector(effective_domains, M, "effective_domains"),
        "kl_to_natural": _vector(kl_to_natural, M, "kl_to_natural"),
        "largest_epochs": _vector(largest_epochs, M, "largest_epochs"),
    }
    cap = _vector(epoch_cap, M, "epoch_cap")
    colours = cluster_palette(M)
    fig = make_subplots(
        rows=2,
        cols=len(METRIC_PANELS),
        specs=[[{"colspan": len(METRIC_PANELS)}] + [None] * (len(METRIC_PANELS) - 1)]
        + [[{}] * len(METRIC_PANELS)],
        row_heights=[0.6, 0.4],
        vertical_spacing=0.22,  # room for the slanted domain labels above the panel titles
        horizontal_spacing=0.06,
        subplot_titles=["Weight per domain", *METRIC_PANELS.values()],
    )
    fig.add_trace(
        go.Bar(
            x=domains,
            y=natural,
            name=NATURAL,
            marker_color="#c9d1d9",
            hovertemplate="%{x}<br>natural %{y:.4f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    for m, name in enumerate(names):
        fig.add_trace(
            go.Bar(
                x=domains,
                y=weights[m],
                name=name,
                legendgroup=name,
                marker_color=colours[m],
                hovertemplate=f"{name}<br>%{{x}}<br>w = %{{y:.4f}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    for col, (key, values) in enumerate(panels.items(), start=1):
        fig.add_trace(
            go.Bar(
                x=names,
                y=values,
                name=key,
                showlegend=False,
                marker_color=colours,
                hovertemplate=f"%{{x}}<br>{METRIC_PANELS[key]}: %{{y:.4g}}<extra></extra>",
            ),
            row=2,
            col=col,
        )
    fig.add_trace(
        go.Scatter(
            x=names,
            y=cap,
            name=EPOCH_CAP,
            mode="markers",
            marker={"symbol": "line-ew-open", "size": 22, "color": "#d1495b", "line": {"width": 3}},
            showlegend=False,
            hovertemplate="%{x}<br>epoch cap %{y:g}<extra></extra>",
        ),
        row=2,
        col=len(METRIC_PANELS),
    )
    fig.update_layout(barmode="group", legend={"orientation": "h", "y": 1.08, "x": 0})
    fig.update_xaxes(tickangle=-45, tickfont={"size": 10}, row=1, col=1)
    fig.update_yaxes(title="share of training tokens", row=1, col=1)
    fig.update_xaxes(tickfont={"size": 10}, row=2)
    return finish(fig, height=720)
