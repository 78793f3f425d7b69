"""Taxonomy: the hierarchy as sunburst and treemap, the cluster table, and curator edits."""

from __future__ import annotations

import shared
import streamlit as st

from gem_app.app import session_keys as keys
from gem_app.app import state as app_state
from gem_app.app.views import cluster_table, taxonomy_table
from gem_app.viz import sunburst_figure, treemap_figure


def main() -> None:
    ws = shared.workspace()
    view = shared.current_view()
    st.title("Taxonomy")

    taxonomy = app_state.load_taxonomy(ws, view)
    with st.expander(
        "Build the hierarchy" if taxonomy is None else "Rebuild the hierarchy",
        expanded=taxonomy is None,
    ):
        c1, c2 = st.columns(2)
        second = c1.selectbox(
            "Second level", ["none", "auto (BIC)", "2", "3", "4", "6"], key=keys.TAX_LEVEL2
        )
        c2.caption("Level 1 is the fit's clusters; a second level fits GEM inside each of them.")
        if st.button("Build taxonomy", type="primary", key=keys.TAX_BUILD):
            levels = (
                (view.n_clusters,)
                if second == "none"
                else (view.n_clusters, "auto" if second.startswith("auto") else int(second))
            )
            with st.status("Building the taxonomy…", expanded=True) as status:
                st.write(
                    f"Level 1: the fit's {view.n_clusters} clusters"
                    + ("" if len(levels) == 1 else f"; level 2: GEM fitted inside each ({second})")
                )
                taxonomy = app_state.build_fit_taxonomy(ws, view, levels)
                status.update(
                    label="Taxonomy built and saved in the workspace.",
                    state="complete",
                    expanded=False,
                )

    nodes = taxonomy_table(taxonomy) if taxonomy is not None else cluster_table(view)
    if taxonomy is None:
        st.caption("No taxonomy built yet: showing the fit's clusters as one level.")

    c1, c2 = st.columns([1, 1])
    chart = c1.segmented_control(
        "Chart", ["Sunburst", "Treemap"], default="Sunburst", key=keys.TAX_CHART
    )
    colour = c2.segmented_control("Colour", ["GIS", "purity"], default="GIS", key=keys.TAX_COLOUR)
    colour_col, colour_title = ("gis", "GIS (nats)") if colour != "purity" else ("purity", "purity")
    plot_nodes = nodes.fillna({colour_col: 0.0})
    is_root = plot_nodes["id"] == "root"  # colour the root like its average child, not the total
    plot_nodes.loc[is_root, colour_col] = plot_nodes.loc[~is_root, colour_col].mean()
    figure = sunburst_figure if chart != "Treemap" else treemap_figure
    st.plotly_chart(
        figure(plot_nodes, colour=colour_col, colour_title=colour_title), width="stretch"
    )

    st.subheader("Clusters")
    shown = nodes[nodes["id"] != "root"].drop(columns=["parent"])
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        key=keys.TAX_TABLE,
        column_config={
            "mass": st.column_config.ProgressColumn(
                format="%.3f", min_value=0, max_value=float(shown["mass"].max() or 1)
            ),
            "gis": st.column_config.NumberColumn(format="%.3f"),
            "kappa": st.column_config.NumberColumn(format="%.1f"),
            "purity": st.column_config.NumberColumn(format="%.2f"),
            "tokens": st.column_config.NumberColumn(format="%d"),
        },
    )

    if taxonomy is not None:
        st.subheader("Edit")
        st.caption("Every edit is applied to the saved taxonomy and appended to its edit log.")
        ids = [n.id for n in taxonomy.walk() if n.id != "root"]
        names = {n.id: f"{n.id}: {n.label}" for n in taxonomy.walk()}
        tabs = st.tabs(["Rename", "Merge", "Split", "Exclude"])
        with tabs[0]:
            node = st.selectbox("Node", ids, format_func=names.get, key=keys.TAX_RENAME_NODE)
            label = st.text_input("New label", key=keys.TAX_RENAME_LABEL)
            if st.button("Rename", key=keys.TAX_RENAME):
                if not label.strip():
                    raise ValueError("type a new label for the node first")
                app_state.edit_taxonomy(
                    ws, view, {"op": "rename", "node": node, "label": label.strip()}
                )
                st.rerun()
        with tabs[1]:
            picked = st.multiselect(
                "Nodes with the same parent", ids, format_func=names.get, key=keys.TAX_MERGE_NODES
            )
            merged = st.text_input("Label of the merged node (optional)", key=keys.TAX_MERGE_LABEL)
            if st.button("Merge", key=keys.TAX_MERGE):
                edit = {"op": "merge", "nodes": picked}
                if merged.strip():
                    edit["label"] = merged.strip()
                app_state.edit_taxonomy(ws, view, edit)
                st.rerun()
        with tabs[2]:
            node = st.selectbox("Node", ids, format_func=names.get, key=keys.TAX_SPLIT_NODE)
            parts = st.number_input(
                "Into how many", min_value=2, max_value=16, value=2, key=keys.TAX_SPLIT_N
            )
            if st.button("Split", key=keys.TAX_SPLIT):
                with st.status(f"Fitting GEM inside node {node}…") as status:
                    app_state.edit_taxonomy(
                        ws, view, {"op": "split", "node": node, "n": int(parts), "seed": 0}
                    )
                    status.update(label=f"Node {node} split", state="complete")
                st.rerun()
        with tabs[3]:
            node = st.selectbox("Node", ids, format_func=names.get, key=keys.TAX_EXCLUDE_NODE)
            flag = st.checkbox(
                "Excluded from the mixture",
                value=bool(taxonomy.node(node).excluded),
                key=keys.tax_exclude_flag(node),
            )
            if st.button("Apply", key=keys.TAX_EXCLUDE):
                app_state.edit_taxonomy(
                    ws, view, {"op": "exclude", "node": node, "excluded": bool(flag)}
                )
                st.rerun()
        with st.expander(f"Edit log ({len(taxonomy.edits)} edits)"):
            st.json(taxonomy.edits)


shared.run_page(main)
