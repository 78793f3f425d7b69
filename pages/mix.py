"""Mix & Export: entropy-temperature weights, curator edits, frozen q-step, downloads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import shared
import streamlit as st

from gem_app.app import session_keys as keys
from gem_app.app import state as app_state
from gem_app.app.chosen import ChosenWeights, cluster_weights
from gem_app.app.mixes import compare_documents, mix_from_base, saved_base
from gem_app.app.selection import adjust_editor
from gem_app.export.document import build_mixture_document
from gem_app.export.domains import mix_domains
from gem_app.export.formats import FORMATS, render_mixture
from gem_app.export.saved import (
    check_export_name,
    load_saved_mixture,
    save_mixture,
    saved_mixture_names,
)
from gem_app.viz import epochs_figure, masses_shift_figure, weights_figure
from gem_app.viz.mixtures import mixtures_figure

TAU_SOURCE = "Entropy temperature τ"


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())[:60]


def main() -> None:
    EXTENSIONS = {
        "gem": "json",
        "doremi": "json",
        "regmix": "yaml",
        "megatron": "txt",
        "olmo": "yaml",
        "hf": "json",
        "weborganizer": "json",
    }

    ws = shared.workspace()
    view = shared.current_view()
    st.title("Mix & Export")

    taxonomy = app_state.load_taxonomy(ws, view)
    tax_key = app_state.domains_key(ws, view)
    with st.spinner("Preparing the domains…"):
        domains = view.domains(taxonomy, tax_key)
    total_tokens = float(domains.tokens.sum())
    st.caption(
        f"{len(domains)} domains ({'taxonomy leaves' if domains.source == 'taxonomy' else 'clusters'}), "
        f"{shared.fmt_tokens(total_tokens)} tokens."
    )

    base = st.session_state.get(keys.MIX_BASE)
    use_base = False
    if base is not None:
        problem = base.mismatch(view.name, domains)
        if problem is None:
            source = st.radio(
                "Mixture",
                [TAU_SOURCE, base.label],
                horizontal=True,
                key=keys.MIX_SOURCE,
                help="Start from the entropy temperature, or from a mixture chosen elsewhere "
                "(the multipliers, exclusions, epoch cap and budget below act on it)",
            )
            use_base = source == base.label
        elif base.fit == view.name:
            st.warning(f"The mixture **{base.label}** does not apply here: {problem}.")

    c1, c2, c3, c4 = st.columns(4)
    tau = c1.slider(
        "Entropy temperature τ",
        0.05,
        10.0,
        1.0,
        0.05,
        key=keys.MIX_TAU,
        disabled=use_base,
        help="1 = natural shares; larger = closer to uniform; smaller = concentrate on the best",
    )
    beta = c2.slider(
        "GIS strength β",
        -3.0,
        3.0,
        0.0,
        0.1,
        key=keys.MIX_BETA,
        disabled=use_base,
        help="Tilt towards clusters with high geometric influence",
    )
    max_epochs = c3.slider("Max epochs (0 = no cap)", 0.0, 20.0, 0.0, 0.5, key=keys.MIX_EPOCHS)
    budget = c4.number_input(
        "Token budget",
        min_value=1.0,
        value=total_tokens,
        step=total_tokens / 10,
        format="%.0f",
        key=keys.MIX_BUDGET,
    )

    editor_base = pd.DataFrame(
        {
            "domain": domains.ids,
            "label": [d.label for d in domains.domains],
            "multiplier": np.ones(len(domains)),
            "exclude": [bool(d.excluded) for d in domains.domains],
        }
    )
    editor_base = adjust_editor(  # clusters excluded / boosted from a selection on the Map
        editor_base,
        st.session_state.get(keys.MAP_ADJUST),
        view.name,
        domains,
        view.hard_labels,
        view.weights,
    )
    with st.expander("Per-domain multipliers and exclusions"):
        edited = st.data_editor(
            editor_base,
            key=keys.mix_editor(view.name, tax_key),
            hide_index=True,
            disabled=["domain", "label"],
            width="stretch",
            column_config={
                "multiplier": st.column_config.NumberColumn(
                    min_value=0.0, max_value=100.0, step=0.1
                )
            },
        )
    boost = {
        row.domain: float(row.multiplier) for row in edited.itertuples() if row.multiplier != 1.0
    }
    exclude = [row.domain for row in edited.itertuples() if row.exclude]

    if use_base:
        report = mix_from_base(
            domains,
            base.weights_for(domains),
            boost=boost,
            exclude=exclude,
            max_epochs=max_epochs or None,
            budget=budget,
        )
        summary = f"{base.label}"
    else:
        report = mix_domains(
            domains,
            temperature=tau,
            gis_strength=beta,
            max_epochs=max_epochs or None,
            budget=budget,
            exclude=exclude,
            boost=boost,
        )
        summary = f"τ = {tau:g}, β = {beta:g}"
    st.session_state[keys.MIX_CHOSEN] = ChosenWeights(  # Map's colouring, Evaluate's "current"
        fit=view.name,
        version=tax_key,
        weights=cluster_weights(
            domains.document_domain,
            report.weights,
            view.hard_labels,
            view.weights,
            view.n_clusters,
        ),
        summary=summary + (" and curator edits" if boost or exclude else ""),
        report=report,
    )
    if use_base:
        st.info(f"Showing **{base.label}**.", icon=":material/science:")

    m = st.columns(4)
    m[0].metric("Entropy H(w)", f"{report.entropy:.3f} nats")
    m[1].metric("Effective domains exp H", f"{report.effective_domains:.2f}")
    m[2].metric("KL(w ‖ natural)", f"{report.kl_to_natural:.3f} nats")
    m[3].metric("Largest weight", f"{report.weights.max():.3f}")

    labels = [d.label for d in domains.domains]
    left, right = st.columns([3, 2])
    left.plotly_chart(
        weights_figure(report.natural_share, report.weights, labels),
        width="stretch",
        key=keys.MIX_WEIGHTS_CHART,
    )
    table = report.to_frame().drop(columns=["cluster"])
    table.insert(0, "domain", domains.ids)
    first = ["domain", "weight", "natural_share"]
    table = table[first + [c for c in table.columns if c not in first]]
    right.dataframe(
        table,
        hide_index=True,
        width="stretch",
        height=420,
        key=keys.MIX_TABLE,
        column_config={
            "natural_share": st.column_config.NumberColumn(format="%.4f"),
            "weight": st.column_config.NumberColumn(format="%.4f"),
            "epochs": st.column_config.NumberColumn(format="%.2f"),
            "tokens": st.column_config.NumberColumn(format="%d"),
            "allocated_tokens": st.column_config.NumberColumn(format="%d"),
        },
    )
    if report.epochs is not None:
        st.plotly_chart(
            epochs_figure(report.epochs, labels, max_epochs=max_epochs or None), width="stretch"
        )

    _frozen_geometry(view)

    st.subheader("Export")

    def document():  # built on demand: it hashes the assignments file, too slow per slider move
        return build_mixture_document(view.run, report, domains=domains)

    cols = st.columns(len(FORMATS))
    for col, fmt in zip(cols, FORMATS, strict=True):
        col.download_button(
            fmt,
            lambda fmt=fmt: render_mixture(document(), fmt),
            file_name=f"{view.name}-{fmt}.{EXTENSIONS.get(fmt, 'txt')}",
            key=keys.mix_download(fmt),
            width="stretch",
        )
    s1, s2 = st.columns([3, 1])
    default_name = f"{view.name}-" + (_slug(base.label) if use_base else f"tau{tau:g}")
    name = s1.text_input("Mixture name", value=default_name, key=keys.MIX_NAME)
    if s2.button("Save to workspace", type="primary", key=keys.MIX_SAVE, width="stretch"):
        check_export_name(name)
        save_mixture(document(), name, ws)
        st.success(f"Saved as mixtures/{name} in the workspace.")
    _compare_saved(ws, view, EXTENSIONS)


@st.fragment
def _frozen_geometry(view) -> None:
    """The masses at another T and lambda; a fragment: moving these sliders reruns only it
    (its own errors become messages too: a fragment's rerun is outside the page's)."""
    shared.run_page(lambda: _frozen_geometry_body(view))


def _frozen_geometry_body(view) -> None:
    st.subheader("Soft memberships with the geometry frozen")
    st.caption(
        "One exact q-step of GEM at a new assignment temperature and balance: the vMF "
        "directions and concentrations stay fixed, the masses move."
    )
    r1, r2 = st.columns(2)
    T = r1.slider(
        "Assignment temperature T", 0.1, 3.0, float(view.model.temperature), 0.05, key=keys.MIX_T
    )
    lam = r2.slider("Balance λ", 0.0, 20.0, float(view.model.balance), 0.1, key=keys.MIX_LAMBDA)
    moved = view.reassign(T, lam)
    st.plotly_chart(
        masses_shift_figure(view.masses, moved.masses, view.label_names), width="stretch"
    )


def _use_saved(doc, name: str, fit: str, folder) -> None:
    """Start the mixture above from a saved one (a callback: it runs before the radio exists)."""
    shared.start_mix_from(saved_base(doc, name, fit=fit, folder=folder))


def _compare_saved(ws, view, extensions: dict) -> None:
    """Saved mixtures side by side; export one, or continue from it above."""
    st.subheader("Compare saved mixtures")
    names = saved_mixture_names(ws)
    if not names:
        st.caption("Save mixtures above under different names to compare them here.")
        return
    picked = st.multiselect(
        "Saved mixtures",
        names,
        key=keys.MIX_COMPARE,
        help="Two or more mixtures over the same domains (same fit and taxonomy)",
    )
    if not picked:
        st.caption("Saved: " + ", ".join(f"`{n}`" for n in names) + ". Pick two or more.")
        return
    docs = {name: load_saved_mixture(name, ws) for name in picked}
    comparison = compare_documents(docs)
    st.plotly_chart(
        mixtures_figure(**comparison.figure_arguments()),
        width="stretch",
        key=keys.MIX_COMPARE_CHART,
    )
    table = comparison.to_frame()
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        key=keys.MIX_COMPARE_TABLE,
        column_config={
            c: st.column_config.NumberColumn(format="%.4f")
            for c in table.columns
            if c not in ("mixture", "budget")
        }
        | {"budget": st.column_config.NumberColumn(format="%d")},
    )
    c1, c2 = st.columns([3, 1])
    chosen = c1.selectbox("Export or continue from", picked, key=keys.MIX_COMPARE_PICK)
    c2.button(
        "Use as the mixture above",
        key=keys.MIX_COMPARE_USE,
        width="stretch",
        on_click=_use_saved,
        args=(docs[chosen], chosen, view.name, view.run.folder),
        help="Start Mix & Export from it: the multipliers, exclusions, cap and budget act on it",
    )
    cols = st.columns(len(FORMATS))
    for col, fmt in zip(cols, FORMATS, strict=True):
        col.download_button(
            fmt,
            lambda fmt=fmt, doc=docs[chosen]: render_mixture(doc, fmt),
            file_name=f"{chosen}-{fmt}.{extensions.get(fmt, 'txt')}",
            key=keys.mix_compare_download(fmt),
            width="stretch",
        )


shared.run_page(main)
