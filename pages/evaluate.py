"""Evaluate: proxy studies of the fit (tiny LMs per mixture), run in the background; results."""

from __future__ import annotations

import pandas as pd
import shared
import streamlit as st

from gem_app.app import session_keys as keys
from gem_app.app import state as app_state
from gem_app.app import studies
from gem_app.app.mixes import base_from_document
from gem_app.export.document import build_mixture_document
from gem_app.export.saved import load_saved_mixture, saved_mixture_names
from gem_app.study import METHODS, StudyConfig, delta_table, prediction_table, weights_table
from gem_app.study.report import mean_bpb
from gem_app.viz import bpb_delta_heatmap, predicted_measured_figure, study_weights_figure

NONE = "(none)"
SESSION_MIX = "the mixture chosen on Mix & Export (this session)"
PRESETS = ["ci", "cpu", "gpu"]


def _progress(ws, fit: str) -> None:
    """The fit's study job: a progress bar and a cancel button, or how it ended."""
    entry = studies.running_study(ws, fit)
    if entry is None:
        return
    snap = entry.snapshot()
    if snap["state"] == "running":
        st.progress(
            snap["fraction"],
            text=(
                f"Study **{entry.name}**: {snap['done']} of {snap['total'] or '?'} proxies · "
                f"{snap['message'] or 'starting'} · {snap['seconds']:.0f} s"
            ),
        )
        if st.button("Cancel the study", key=keys.EVAL_CANCEL, icon=":material/cancel:"):
            entry.cancel()
            st.caption("Cancelling at the next training step; finished proxies are kept.")
        return
    seen = st.session_state.get(keys.EVAL_SEEN)
    if seen != id(entry.job):
        st.session_state[keys.EVAL_SEEN] = id(entry.job)
        st.rerun(scope="app")  # once: the list of studies and the results below change
    if snap["state"] == "done":
        st.success(
            f"Study **{entry.name}** finished in {snap['seconds']:.0f} s and is saved with the fit.",
            icon=":material/check_circle:",
        )
    elif snap["state"] == "cancelled":
        st.info(
            f"Study **{entry.name}** was cancelled. Its finished proxies are kept: start a study "
            "with the same proxy settings to resume.",
            icon=":material/cancel:",
        )
    elif snap["state"] == "failed":
        st.error(f"**Study {entry.name} failed:** {snap['error']}", icon=":material/error:")


def _current_mixture(ws, view, choice: str, tax_key: str):
    """The curator's mixture document for the study, or None."""
    if choice == NONE:
        return None
    if choice == SESSION_MIX:
        chosen = st.session_state.get(keys.MIX_CHOSEN)
        if chosen is None or chosen.report is None or chosen.fit != view.name:
            raise ValueError("choose a mixture on Mix & Export first")
        if chosen.version != tax_key:
            raise ValueError("the taxonomy changed since the mixture was chosen on Mix & Export")
        taxonomy = app_state.load_taxonomy(ws, view)
        return build_mixture_document(
            view.run, chosen.report, domains=view.domains(taxonomy, tax_key)
        )
    return load_saved_mixture(choice, ws)


def _start_form(ws, view, tax_key: str, n_studies: int) -> None:
    has_taxonomy = bool(tax_key)
    sources = (["taxonomy"] if has_taxonomy else []) + ["clusters"]
    sources += ["labels"] if view.human is not None else []
    chosen = st.session_state.get(keys.MIX_CHOSEN)
    currents = [NONE]
    if chosen is not None and chosen.report is not None and chosen.fit == view.name:
        currents.append(SESSION_MIX)
    currents += saved_mixture_names(ws)
    with st.form(keys.EVAL_FORM):
        c1, c2, c3 = st.columns(3)
        preset = c1.selectbox(
            "Proxy size",
            PRESETS,
            index=1,
            key=keys.EVAL_PRESET,
            help="ci: seconds per proxy (a smoke test); cpu: about 15 s per proxy on a CPU core "
            "(10-12 minutes for a study of 24 candidates); gpu: for a CUDA device",
        )
        candidates = c1.number_input(
            "RegMix candidates (0 = the preset's)",
            min_value=0,
            max_value=512,
            value=0,
            key=keys.EVAL_CANDIDATES,
        )
        steps = c1.number_input(
            "Training steps per proxy (0 = the preset's)",
            min_value=0,
            max_value=100_000,
            value=0,
            key=keys.EVAL_STEPS,
        )
        method = c2.selectbox("Method", list(METHODS), key=keys.EVAL_METHOD)
        target = c2.selectbox(
            "Target (lower is better)",
            ["mean", "worst", "overall"],
            key=keys.EVAL_TARGET,
            help="mean: held-out bits per byte averaged over the domains; worst: the worst "
            "domain; overall: the natural document mix",
        )
        source = c2.selectbox("Domains", sources, key=keys.EVAL_DOMAINS)
        current = c3.selectbox(
            "Curator's current mixture (an anchor)", currents, key=keys.EVAL_CURRENT
        )
        seed = c3.number_input("Seed", min_value=0, value=0, key=keys.EVAL_SEED)
        name = c3.text_input("Study name", value=f"study-{n_studies + 1}", key=keys.EVAL_NAME)
        submitted = st.form_submit_button("Start the study", type="primary")
    if not submitted:
        return
    config = StudyConfig(
        preset=preset,
        n_proxies=int(candidates) or None,
        steps=int(steps) or None,
        method=method,
        target=target,
        domains=source,
        seed=int(seed),
    )
    document = _current_mixture(ws, view, current, tax_key)
    studies.start_study(
        ws,
        view,
        name.strip(),
        config,
        current=document,
        current_label=None if current == NONE else current,
    )
    st.rerun()


def _results(ws, view, name: str) -> None:
    saved = studies.load_study(ws, view.name, name)
    study, settings = saved.study, saved.settings
    config = settings.get("config", {})
    head = studies.headline(study)
    spearman = study["regression"].get("cv_spearman")
    st.caption(
        f"{len(study['proxies'])} proxies · preset `{config.get('preset')}` · method "
        f"`{config.get('method')}` · target `{config.get('target')}` · domains "
        f"`{config.get('domains')}` · {settings.get('seconds', 0):.0f} s"
        + (f" · current mixture `{settings['current']}`" if settings.get("current") else "")
    )
    m = st.columns(4)
    if head["recommended"] is not None:
        m[0].metric(
            "Recommended: mean bits/byte",
            f"{head['recommended']['mean']:.4f}",
            delta=None if head["delta_mean"] is None else f"{head['delta_mean']:+.4f} vs natural",
            delta_color="inverse",
        )
        m[1].metric(
            "Recommended: overall bits/byte",
            f"{head['recommended']['overall']:.4f}",
            delta=None
            if head["delta_overall"] is None
            else f"{head['delta_overall']:+.4f} vs natural",
            delta_color="inverse",
        )
    sigma = head["sigma_mean"]
    m[2].metric(
        "Seed noise σ (mean)",
        "—" if sigma is None else f"{sigma:.4f}",
        help="Standard deviation over seeds of the same mixture; a change under 2σ is noise",
    )
    m[3].metric(
        "Cross-validated Spearman",
        "—" if spearman is None else f"{spearman:.2f}",
        delta=f"trust: {studies.trust(spearman)}",
        delta_color="off",
        help="Rank correlation of the regressor's out-of-fold predictions with the measured "
        "target: how far to trust the search",
    )

    st.subheader("Weights per domain")
    table = weights_table(study)
    st.plotly_chart(
        study_weights_figure(table["domains"], table["weights"]),
        width="stretch",
    )

    st.subheader("Change in held-out bits per byte against natural")
    st.caption(
        "Blue is better than natural. Grey cells are within 2σ of the seed noise of their "
        "domain: the proxies cannot tell them from natural."
    )
    delta = delta_table(study)
    st.plotly_chart(
        bpb_delta_heatmap(delta["delta"], delta["mixtures"], delta["domains"], delta["sigma"]),
        width="stretch",
    )

    st.subheader("Predicted vs measured")
    pred = prediction_table(saved.regression)
    recommended = study["recommended"]
    point = None
    if recommended.get("predicted") is not None and recommended.get("measured") is not None:
        point = (float(recommended["predicted"]), float(recommended["measured"]))
    if pred["names"]:
        st.plotly_chart(
            predicted_measured_figure(
                pred["predicted"],
                pred["measured"],
                pred["names"],
                cv_spearman=pred["cv_spearman"],
                model=pred["model"],
                recommended=point,
            ),
            width="stretch",
        )
    else:
        st.caption("No regressor was fitted in this study.")

    st.subheader("Use it")
    if saved.recommended is None:
        st.caption(
            "A study over the human categories has no mixture document: its weights are over "
            "label domains, which Mix & Export cannot map to clusters."
        )
    elif st.button(
        "Use this mixture on Mix & Export",
        type="primary",
        key=keys.EVAL_USE,
        icon=":material/send:",
    ):
        shared.start_mix_from(
            base_from_document(
                view.name, saved.recommended, f"study {name}: recommended ({config.get('target')})"
            )
        )
        st.switch_page("mix.py")

    with st.expander("Every proxy"):
        rows = [
            {
                "name": p["name"],
                "kind": p["kind"],
                "seed": p["seed"],
                "overall_bpb": p["overall_bpb"],
                "mean_bpb": mean_bpb(p["bpb"]),
                "seconds": p["seconds"],
            }
            for p in study["proxies"]
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key=keys.EVAL_PROXIES)


def main() -> None:
    ws = shared.workspace()
    view = shared.current_view()
    st.title("Evaluate mixtures")
    st.caption(
        "Tiny proxy language models, one per candidate mixture, trained on this fit's text and "
        "scored on the same held-out documents in bits per byte. They rank mixtures; they do "
        "not predict a large model's accuracy."
    )
    entry = studies.running_study(ws, view.name)
    running = entry is not None and entry.running
    st.fragment(_progress, run_every=2.0 if running else None)(ws, view.name)

    tax_key = app_state.domains_key(ws, view)
    names = studies.list_studies(ws, view.name)
    with st.expander("Start a study", expanded=not names and not running):
        _start_form(ws, view, tax_key, len(names))
    if not names:
        st.info(
            "No study of this fit yet: start one above (the `ci` size finishes in about a "
            "minute; `cpu` takes 10-12 minutes with 24 candidates).",
            icon=":material/science:",
        )
        return
    name = st.selectbox("Study", names, key=keys.EVAL_STUDY)
    _results(ws, view, name)


shared.run_page(main)
