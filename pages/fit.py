"""Fit: K (or an automatic sweep), balance, temperature, seed, device; progress by objective."""

from __future__ import annotations

from pathlib import Path

import shared
import streamlit as st
import torch

from gem_app.app import session_keys as keys
from gem_app.app import state as app_state
from gem_app.app.bundle import SAMPLE_DATA, SAMPLE_EMBEDDINGS
from gem_app.evaluate.selection import sweep_k
from gem_app.viz import masses_figure, objective_figure, sweep_figure


def main() -> None:
    ws = shared.workspace()
    st.title("Fit")
    dataset = st.session_state.get(keys.DATASET) or {
        "data": str(SAMPLE_DATA),
        "embeddings": str(SAMPLE_EMBEDDINGS),
        "text_col": "text",
        "id_col": "id",
        "label_col": "section",
        "tokens_col": "tokens",
    }
    st.caption(
        f"Corpus: `{Path(dataset['data']).name}`"
        + (
            f" · embeddings `{Path(dataset['embeddings']).name}`"
            if dataset.get("embeddings")
            else " · embedded with MiniLM"
        )
        + " — choose another on the Data page."
    )

    with st.form(keys.FIT_FORM):
        c1, c2, c3 = st.columns(3)
        auto = c1.checkbox("Choose K automatically (BIC sweep)", key=keys.FIT_AUTO)
        k = c1.number_input("K (clusters)", min_value=2, max_value=1024, value=16, key=keys.FIT_K)
        k_range = c1.slider("Sweep range", 2, 64, (4, 32), step=2, key=keys.FIT_K_RANGE)
        balance = c2.slider(
            "Balance λ",
            0.0,
            10.0,
            1.0,
            0.1,
            key=keys.FIT_BALANCE,
            help="Weight of the entropy of the cluster masses; larger = more equal clusters",
        )
        temperature = c2.slider(
            "Assignment temperature T",
            0.05,
            3.0,
            1.0,
            0.05,
            key=keys.FIT_TEMPERATURE,
            help="1 = EM posteriors; smaller = harder assignments",
        )
        seed = c3.number_input("Seed", min_value=0, value=0, key=keys.FIT_SEED)
        devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        device = c3.selectbox("Device", devices, key=keys.FIT_DEVICE)
        concentration = c3.selectbox(
            "Concentration", ["tied", "per-cluster"], key=keys.FIT_CONCENTRATION
        )
        name = st.text_input(
            "Save as", value=f"{Path(dataset['data']).stem}-k{k}-s{seed}", key=keys.FIT_NAME_NEW
        )
        submitted = st.form_submit_button("Fit", type="primary")

    if submitted:
        params = dict(
            balance=balance,
            temperature=temperature,
            random_state=int(seed),
            device=device,
            concentration=concentration,
            text_col=dataset["text_col"],
            id_col=dataset["id_col"],
            label_col=dataset["label_col"],
            tokens_col=dataset["tokens_col"],
        )
        if auto:
            ks = list(range(k_range[0], k_range[1] + 1, 2))
            bar = st.progress(0.0, text="Sweeping K…")
            curve = sweep_k(
                dataset["data"],
                ks,
                embeddings=dataset.get("embeddings"),
                progress=lambda i, kk: bar.progress(i / len(ks), text=f"K = {kk}"),
                **params,
            )
            bar.empty()
            k = int(curve.loc[curve["bic"].idxmin(), "k"])
            st.session_state[keys.FIT_SWEEP] = curve
            st.plotly_chart(
                sweep_figure(curve["k"], curve["bic"], chosen=k, metric="BIC (lower is better)"),
                width="stretch",
            )
            name = name.replace(f"-k{st.session_state[keys.FIT_K]}-", f"-k{k}-")
        bar = st.progress(0.0, text="Fitting…")
        max_iter = 100

        def on_iteration(iteration: int, objective: float) -> None:
            bar.progress(
                min(iteration / max_iter, 1.0), text=f"Iteration {iteration}: J = {objective:.6g}"
            )

        app_state.fit_into_workspace(
            ws,
            name,
            dataset["data"],
            n_clusters=int(k),
            embeddings=dataset.get("embeddings"),
            callback=on_iteration,
            max_iter=max_iter,
            **params,
        )
        bar.progress(1.0, text="Done")
        st.session_state[keys.FIT_NAME] = name
        st.success(f"Saved as **{name}** in the workspace; the other pages now show it.")

    view = shared.current_view()
    model = view.model
    st.subheader(f"Fit `{view.name}`")
    m = st.columns(5)
    m[0].metric("Documents", f"{view.n_documents:,}")
    m[1].metric("Clusters K", view.n_clusters)
    m[2].metric("Iterations", model.n_iter_)
    m[3].metric("Objective J", f"{model.objective_:.4g}")
    m[4].metric("Anisotropy R0", f"{model.anisotropy_:.3f}")
    sweep = st.session_state.get(keys.FIT_SWEEP)
    if sweep is not None:
        best = int(sweep.loc[sweep["bic"].idxmin(), "k"])
        st.plotly_chart(
            sweep_figure(sweep["k"], sweep["bic"], chosen=best, metric="BIC (lower is better)"),
            width="stretch",
        )
    left, right = st.columns(2)
    left.plotly_chart(objective_figure(model.objective_history_), width="stretch")
    right.plotly_chart(
        masses_figure(view.masses, model.concentrations_, view.label_names), width="stretch"
    )


shared.run_page(main)
