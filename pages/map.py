"""Map: the projected hypersphere (3D globe or 2D map), coloured by cluster, category, GIS or weight."""

from __future__ import annotations

import numpy as np
import shared
import streamlit as st

from gem_app.app import session_keys as keys
from gem_app.app import state as app_state
from gem_app.app.chosen import natural_cluster_weights
from gem_app.app.projection import DEFAULT_POINT_CAP, sphere_to_lonlat
from gem_app.viz import flat_map_figure, globe_figure


def main() -> None:
    view = shared.current_view()
    st.title("Map of the hypersphere")
    st.caption(
        f"{view.n_documents:,} documents on S^{view.model.n_features_in_ - 1}, "
        f"K = {view.n_clusters} clusters, anisotropy R0 = {view.model.anisotropy_:.3f}"
    )

    colour_options = ["cluster", "document GIS", "chosen weight"]
    if view.human is not None:
        colour_options.insert(1, "human category")
    c1, c2, c3, c4 = st.columns([1.2, 1.3, 1.2, 1.3])
    shape = c1.segmented_control(
        "View", ["Globe 3D", "Map 2D"], default="Globe 3D", key=keys.MAP_SHAPE
    )
    colour_by = c2.selectbox("Colour by", colour_options, key=keys.MAP_COLOUR)
    cap = int(
        c3.number_input(
            "Point cap",
            min_value=500,
            max_value=200_000,
            value=DEFAULT_POINT_CAP,
            step=5_000,
            key=keys.MAP_CAP,
            help="At most this many points go to the browser",
        )
    )
    want_umap = c4.toggle(
        "UMAP layout",
        value=app_state.env_flag("GEM_APP_UMAP", True),
        key=keys.MAP_UMAP,
        help="UMAP (haversine output) on the shown points; computed once per fit in the background",
    )

    rows = view.display_rows(cap)
    layout_name = "spherical projection (top principal directions of the cluster means)"
    umap = view.umap_layout(cap) if want_umap else None
    if umap is not None:
        rows, xyz, centres = umap
        layout_name = "UMAP (haversine output metric)"
    else:
        xyz, centres = view.principal_layout(rows)
        if want_umap:
            view.start_umap(cap)
            if view.umap_error:
                st.warning(f"UMAP failed ({view.umap_error}); showing the spherical projection.")
            else:
                st.info(
                    "UMAP layout is being computed in the background; showing the instant "
                    "spherical projection meanwhile. Press **Refresh** in a moment.",
                    icon=":material/hourglass_top:",
                )
                st.button("Refresh", key=keys.MAP_REFRESH)
    st.caption(
        f"Showing **{len(rows):,} of {view.n_documents:,}** documents "
        f"(cap {cap:,}, stratified by cluster) · layout: {layout_name}"
    )

    clusters = view.hard_labels[rows]
    if colour_by == "cluster":
        colour = clusters
    elif colour_by == "human category":
        colour = view.human[rows]
    elif colour_by == "document GIS":
        colour = view.gis.document[rows].astype(float)
    else:
        chosen = st.session_state.get(keys.MIX_CHOSEN)
        if chosen is not None and chosen.applies_to(
            view.name, app_state.domains_key(shared.workspace(), view), view.n_clusters
        ):
            weights = chosen.weights
            st.caption(
                f"Colour: each cluster's share of the mixture chosen on Mix & Export ({chosen.summary})."
            )
        else:
            weights = natural_cluster_weights(view.cluster_tokens)
            st.caption(
                "Colour: each cluster's natural share of the tokens (the default mixture, τ = 1); "
                "choose a mixture on Mix & Export to see its weights here."
            )
        colour = np.asarray(weights, dtype=float)[clusters]
    texts = view.run.frame["text"].to_numpy()[rows]
    names = shared.cluster_options(view)
    common = dict(
        hover=[str(t)[:200] for t in texts],
        rows=rows,
        clusters=clusters,
        centre_labels=names,
        colour_title=colour_by,
    )
    if shape == "Map 2D":
        lon, lat = sphere_to_lonlat(xyz)
        clon, clat = sphere_to_lonlat(np.nan_to_num(centres))
        fig = flat_map_figure(
            lon, lat, colour, centres_lonlat=np.column_stack([clon, clat]), **common
        )
        event = st.plotly_chart(
            fig,
            width="stretch",
            on_select="rerun",
            key=keys.MAP_FLAT,
            selection_mode=("points", "box", "lasso"),
        )
        points = (event or {}).get("selection", {}).get("points", []) if event else []
        picked = [p["customdata"][1] for p in points if p.get("customdata") is not None]
        if picked:
            st.session_state[keys.MAP_CLUSTER] = names[int(np.bincount(picked).argmax())]
    else:
        st.plotly_chart(
            globe_figure(xyz, colour, centres=centres, **common),
            width="stretch",
            key=keys.MAP_GLOBE,
        )

    st.subheader("Documents of a cluster")
    left, right = st.columns([1, 2])
    choice = left.selectbox(
        "Cluster", names, key=keys.MAP_CLUSTER, help="Or select points on the 2D map"
    )
    query = right.text_input("Search in its documents", key=keys.MAP_SEARCH)
    k = names.index(choice)
    label = view.labels[k]
    st.markdown(
        f"**Top terms:** {', '.join(label.terms) or '—'} · mass ρ = {view.masses[k]:.3f} · "
        f"GIS = {view.gis.cluster[k]:.3f} nats"
    )
    docs = view.cluster_documents(k, query, limit=100)
    st.dataframe(
        docs,
        hide_index=True,
        width="stretch",
        height=320,
        column_config={
            "text": st.column_config.TextColumn(width="large"),
            "probability": st.column_config.NumberColumn(format="%.3f"),
        },
    )


shared.run_page(main)
