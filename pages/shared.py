"""Helpers shared by the pages: the workspace, the selected fit, errors, formatting.

Imported as ``import shared``: Streamlit puts the entry script's folder (this one) on
``sys.path`` while the app runs.
"""

from __future__ import annotations

import streamlit as st

from gem_app.app import session_keys as keys
from gem_app.app import state as app_state
from gem_app.storage.manifest import WorkspaceCorruption


def workspace():
    """The app's workspace (``gem app --workspace`` / ``$GEM_WORKSPACE``)."""
    return app_state.open_workspace()


def show_error(exc: BaseException) -> None:
    """A message that says what to fix, never a traceback."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    st.error(f"**Could not do that:** {message}", icon=":material/error:")


def _fit_progress():
    bar = st.progress(0.0, text="Fitting the bundled sample (first launch, once)…")

    def callback(iteration: int, objective: float) -> None:
        bar.progress(
            min(iteration / 100, 1.0),
            text=f"Fitting the sample: iteration {iteration}, J = {objective:.5g}",
        )

    return bar, callback


def ensure_fit_selected() -> str:
    """The fit this session looks at (the sample, fitted on first launch, by default)."""
    ws = workspace()
    fits = app_state.list_fits(ws)
    if not fits:
        bar, callback = _fit_progress()
        app_state.ensure_sample_fit(ws, callback=callback)
        bar.empty()
        fits = app_state.list_fits(ws)
    current = st.session_state.get(keys.FIT_NAME)
    if current not in fits:
        st.session_state[keys.FIT_NAME] = fits[0]
    return st.session_state[keys.FIT_NAME]


def sidebar() -> None:
    """The fit selector and workspace line, on every page."""
    ensure_fit_selected()
    ws = workspace()
    fits = app_state.list_fits(ws)
    with st.sidebar:
        st.selectbox("Fit", fits, key=keys.FIT_NAME, help="Fits saved in the workspace")
        st.caption(f"Workspace: `{ws.root}`")


def current_view():
    """The :class:`gem_app.app.views.FitView` of the selected fit."""
    name = ensure_fit_selected()
    with st.spinner("Loading the fit…"):
        return app_state.fit_view(workspace(), name)


def start_mix_from(base) -> None:
    """Make ``base`` (a :class:`gem_app.app.mixes.BaseMixture`) the mixture Mix & Export shows."""
    st.session_state[keys.MIX_BASE] = base
    st.session_state[keys.MIX_SOURCE] = base.label


def cluster_options(view) -> list[str]:
    return [f"{k}: {label}" for k, label in enumerate(view.label_names)]


def fmt_tokens(n: float) -> str:
    n = float(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def run_page(body) -> None:
    """Run a page body; bad input becomes a message on the page, never a traceback."""
    try:
        body()
    except (ValueError, OSError, KeyError, WorkspaceCorruption) as exc:
        show_error(exc)
