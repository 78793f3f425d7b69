"""Evaluate-page figures: what proxy studies measured (weights, loss changes, predictions).

Pure functions: arrays in, ``go.Figure`` out; the study computes everything
(:func:`gem_app.study.report.weights_table`, :func:`~gem_app.study.report.delta_table`,
:func:`~gem_app.study.report.prediction_table`).

- :func:`study_weights_figure`: natural / current / recommended weights per domain;
- :func:`bpb_delta_heatmap`: change in held-out bits per byte against natural, mixtures x
  domains, cells within ``n_sigma`` seed-noise standard deviations greyed;
- :func:`predicted_measured_figure`: the regressor's out-of-fold prediction against the
  measurement, with the cross-validated Spearman correlation as a trust indicator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from gem_app.viz.style import finish

__all__ = ["study_weights_figure", "bpb_delta_heatmap", "predicted_measured_figure"]

_MIXTURE_COLORS = {"natural": "#b8c2cc", "current": "#e0a040", "recommended": "#3b6fb6"}
_GREY = "#d9d9d9"


def _short(names: Sequence[str], width: int = 28) -> list[str]:
    return [str(n) if len(str(n)) <= width else str(n)[: width - 1] + "…" for n in names]


def study_weights_figure(
    domains: Sequence[str], weights: Mapping[str, Sequence[float]]
) -> go.Figure:
    """Grouped horizontal bars: the weight of every domain in each named mixture.

    Parameters
    ----------
    domains : sequence of str, length K
    weights : mapping name -> array-like of shape (K,)
        In drawing order (e.g. natural, current, recommended).
    """
    names = _short(domains)
    traces = []
    for i, (label, values) in enumerate(weights.items()):
        values = np.asarray(values, dtype=float)
        if values.shape != (len(names),):
            raise ValueError(
                f"weights of {label!r} have shape {values.shape}, expected ({len(names)},)"
            )
        traces.append(
            go.Bar(
                y=names,
                x=values.tolist(),
                orientation="h",
                name=label,
                marker_color=_MIXTURE_COLORS.get(label, ["#5b8e7d", "#8e5b7d"][i % 2]),
                hovertemplate="%{y}<br>" + label + " w = %{x:.4f}<extra></extra>",
            )
        )
    fig = go.Figure(traces)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="share of training tokens")
    fig.update_layout(barmode="group", legend={"orientation": "h", "y": 1.06, "x": 0})
    return finish(fig, height=max(320, 22 * len(names) * max(1, len(weights)) // 2 + 120))


def _cells(values: np.ndarray) -> list[list]:
    """A 2-D array as nested lists, None for NaN (gaps in a heatmap)."""
    return [[float(v) if np.isfinite(v) else None for v in row] for row in values]


def _significant(delta: np.ndarray, sigma, n_sigma: float) -> np.ndarray:
    """Cells whose change reaches ``n_sigma`` seed-noise deviations (every cell without sigma)."""
    finite = np.isfinite(delta)
    if sigma is None:
        return finite
    sigma = np.asarray([np.nan if s is None else s for s in sigma], dtype=float)
    if sigma.shape != (delta.shape[1],):
        raise ValueError(f"sigma has shape {sigma.shape}, expected ({delta.shape[1]},)")
    with np.errstate(invalid="ignore"):
        return finite & (np.abs(delta) >= n_sigma * np.nan_to_num(sigma, nan=0.0)[None, :])


def bpb_delta_heatmap(
    delta,
    mixtures: Sequence[str],
    domains: Sequence[str],
    sigma=None,
    *,
    n_sigma: float = 2.0,
) -> go.Figure:
    """Mixtures x domains heatmap of the change in bits per byte against natural.

    Negative (blue) is better than natural. Cells with ``|delta| < n_sigma * sigma_k`` (seed
    noise of domain ``k``) are grey: the proxies cannot tell them from natural.

    Parameters
    ----------
    delta : array-like of shape (M, K)
        ``None`` / NaN where not measured.
    mixtures : sequence of str, length M
    domains : sequence of str, length K
    sigma : array-like of shape (K,), optional
        Seed-noise standard deviation per domain.
    n_sigma : float, default 2.0
    """
    delta = np.array(
        [[np.nan if v is None else float(v) for v in row] for row in delta], dtype=float
    ).reshape(len(mixtures), len(domains))
    significant = _significant(delta, sigma, n_sigma)
    bound = float(np.nanmax(np.abs(delta))) if np.isfinite(delta).any() else 1.0
    x, y = _short(domains, 22), _short(mixtures, 22)
    text = [[("" if not np.isfinite(v) else f"{v:+.3f}") for v in row] for row in delta]
    strong = np.where(significant, delta, np.nan)
    weak = np.where(~significant & np.isfinite(delta), 0.0, np.nan)
    fig = go.Figure(
        [
            go.Heatmap(
                z=_cells(weak),
                x=x,
                y=y,
                colorscale=[[0, _GREY], [1, _GREY]],
                showscale=False,
                text=text,
                texttemplate="%{text}",
                hovertemplate="%{y} on %{x}<br>Δ bpb %{text} (within noise)<extra></extra>",
                name="within noise",
            ),
            go.Heatmap(
                z=_cells(strong),
                x=x,
                y=y,
                colorscale="RdBu_r",
                zmid=0.0,
                zmin=-bound,
                zmax=bound,
                text=text,
                texttemplate="%{text}",
                colorbar={"title": {"text": "Δ bits/byte"}},
                hovertemplate="%{y} on %{x}<br>Δ bpb %{text}<extra></extra>",
                name=f"beyond {n_sigma:g} σ",
            ),
        ]
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(tickangle=-30)
    return finish(fig, height=max(300, 34 * len(mixtures) + 140))


def predicted_measured_figure(
    predicted,
    measured,
    names: Sequence[str],
    *,
    cv_spearman: float | None = None,
    model: str | None = None,
    recommended: tuple[float, float] | None = None,
) -> go.Figure:
    """Out-of-fold predicted against measured target, one point per proxy, with y = x.

    Parameters
    ----------
    predicted, measured : array-like of shape (n,)
    names : sequence of str, length n
    cv_spearman : float, optional
        Shown in the title as the trust indicator.
    model : str, optional
        The regressor's name.
    recommended : (predicted, measured), optional
        The recommended mixture, drawn as a star.
    """
    predicted = np.asarray(predicted, dtype=float)
    measured = np.asarray(measured, dtype=float)
    if predicted.shape != measured.shape or predicted.ndim != 1 or len(names) != predicted.size:
        raise ValueError(
            f"predicted {predicted.shape}, measured {measured.shape} and {len(names)} names "
            "must have one entry per proxy"
        )
    points = [predicted, measured]
    if recommended is not None:
        points.append(np.asarray(recommended, dtype=float))
    values = np.concatenate(points)
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    pad = 0.05 * (hi - lo or 1.0)
    traces = [
        go.Scatter(
            x=[lo - pad, hi + pad],
            y=[lo - pad, hi + pad],
            mode="lines",
            line={"color": "#999999", "dash": "dash"},
            name="predicted = measured",
            hoverinfo="skip",
        ),
        go.Scatter(
            x=predicted.tolist(),
            y=measured.tolist(),
            mode="markers",
            marker={"color": "#5b8e7d", "size": 8},
            text=list(names),
            name="proxies (out of fold)",
            hovertemplate="%{text}<br>predicted %{x:.4f}<br>measured %{y:.4f}<extra></extra>",
        ),
    ]
    if recommended is not None:
        traces.append(
            go.Scatter(
                x=[recommended[0]],
                y=[recommended[1]],
                mode="markers",
                marker={"color": "#3b6fb6", "size": 16, "symbol": "star"},
                name="recommended",
                hovertemplate=(
                    "recommended<br>predicted %{x:.4f}<br>measured %{y:.4f}<extra></extra>"
                ),
            )
        )
    fig = go.Figure(traces)
    fig.update_xaxes(title="predicted (bits per byte)")
    fig.update_yaxes(title="measured (bits per byte)", scaleanchor="x", scaleratio=1)
    title = None
    if cv_spearman is not None and np.isfinite(cv_spearman):
        title = f"cross-validated Spearman ρ = {cv_spearman:.2f}"
        if model:
            title += f" ({model})"
    return finish(fig, title=title, height=440)
