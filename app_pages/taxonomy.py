"""Taxonomy: the hierarchy as sunburst and treemap, the cluster table, and curator edits."""

from __future__ import annotations

import streamlit as st

from app_pages import _shared
from gem_app.app import state as app_state
from gem_app.app.views import cluster_table, taxonomy_table
from gem_app.viz import sunburst_figure, treemap_figure


def main() -> None:
    ws = _shared.workspace()
    view = _shared.current_view()
    st.title("Taxonomy")

    taxonomy = app_state.load_taxonomy(ws, view)
    with st.expander(
        "Build the hierarchy" if taxonomy is None else "Rebuild the hierarchy",
        expanded=taxonomy is None,
    ):
        c1, c2 = st.columns(2)
        second = c1.selectbox(
            "Second level", ["none", "auto (BIC)", "2", "3", "4", "6"], key="tax_level2"
        )
        c2.caption("Level 1 is the fit's clusters; a second level fits GEM inside each of them.")
        if st.button("Build taxonomy", type="primary", key="tax_build"):
            levels = (
                (view.n_clusters,)
                if second == "none"
                else (view.n_clusters, "auto" if second.startswith("auto") else int(second))
            )
            with st.spinner("Building the taxonomy…"):
                taxonomy = app_state.build_fit_taxonomy(ws, view, levels)
            st.success("Taxonomy built and saved in the workspace.")

    nodes = taxonomy_table(taxonomy) if taxonomy is not None else cluster_table(view)
    if taxonomy is None:
        st.caption("No taxonomy built yet: showing the fit's clusters as one level.")

    c1, c2 = st.columns([1, 1])
    chart = c1.segmented_control(
        "Chart", ["Sunburst", "Treemap"], default="Sunburst", key="tax_chart"
    )
    colour = c2.segmented_control("Colour", ["GIS", "purity"], default="GIS", key="tax_colour")
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
        key="tax_table",
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
            node = st.selectbox("Node", ids, format_func=names.get, key="tax_rename_node")
            label = st.text_input("New label", key="tax_rename_label")
            if st.button("Rename", key="tax_rename"):
                if not label.strip():
                    raise ValueError("type a new label for the node first")
                app_state.edit_taxonomy(
                    ws, view, {"op": "rename", "node": node, "label": label.strip()}
                )
                st.rerun()
        with tabs[1]:
            picked = st.multiselect(
                "Nodes with the same parent", ids, format_func=names.get, key="tax_merge_nodes"
            )
            merged = st.text_input("Label of the merged node (optional)", key="tax_merge_label")
            if st.button("Merge", key="tax_merge"):
                edit = {"op": "merge", "nodes": picked}
                if merged.strip():
                    edit["label"] = merged.strip()
                app_state.edit_taxonomy(ws, view, edit)
                st.rerun()
        with tabs[2]:
            node = st.selectbox("Node", ids, format_func=names.get, key="tax_split_node")
            parts = st.number_input(
                "Into how many", min_value=2, max_value=16, value=2, key="tax_split_n"
            )
            if st.button("Split", key="tax_split"):
                with st.spinner("Fitting GEM inside the node…"):
                    app_state.edit_taxonomy(
                        ws, view, {"op": "split", "node": node, "n": int(parts), "seed": 0}
                    )
                st.rerun()
        with tabs[3]:
            node = st.selectbox("Node", ids, format_func=names.get, key="tax_exclude_node")
            flag = st.checkbox(
                "Excluded from the mixture",
                value=bool(taxonomy.node(node).excluded),
                key=f"tax_exclude_flag_{node}",
            )
            if st.button("Apply", key="tax_exclude"):
                app_state.edit_taxonomy(
                    ws, view, {"op": "exclude", "node": node, "excluded": bool(flag)}
                )
                st.rerun()
        with st.expander(f"Edit log ({len(taxonomy.edits)} edits)"):
            st.json(taxonomy.edits)


_shared.run_page(main)
