"""Map: every document of the fit on the projected hypersphere (globe or 2D map).

A density layer of all documents under a stratified sample of interactive points; the UMAP
layout replaces the instant one by itself when its background job ends (a polling fragment).
"""

from __future__ import annotations

import numpy as np
import shared
import streamlit as st

from gem_app.app import session_keys as keys
from gem_app.app import state as app_state
from gem_app.app.chosen import natural_cluster_weights
from gem_app.app.density import density_raster
from gem_app.app.layout import map_layout
from gem_app.app.projection import DEFAULT_POINT_CAP, cluster_centres, sphere_to_lonlat
from gem_app.app.search import embed_query, fold_correction, search_documents
from gem_app.app.selection import (
    ClusterAdjustments,
    documents_frame,
    selected_rows,
    selection_breakdown,
)
from gem_app.io.encoder import load_encoder
from gem_app.viz import cluster_palette, flat_map_figure, globe_figure
from gem_app.viz.density import png_data_uri, shade_categories, shade_counts, shade_values

DENSITY_MODES = ["by colour", "by count", "off"]
GLOBE_RASTER = (120, 60)


@st.cache_data(max_entries=12, show_spinner="Binning every document…")
def _density_png(key: tuple, _xyz, _codes, n_codes, _values, colours: tuple) -> str:
    """The 2D density image of all documents (a PNG data URI); ``key`` names what is drawn."""
    lon, lat = sphere_to_lonlat(_xyz)
    if _codes is not None:
        raster = density_raster(lon, lat, categories=_codes, n_categories=n_codes)
        return png_data_uri(shade_categories(raster.by_category, list(colours)))
    if _values is not None:
        raster = density_raster(lon, lat, values=_values)
        return png_data_uri(
            shade_values(raster.value_mean, raster.counts, vmin=_values.min(), vmax=_values.max())
        )
    return png_data_uri(shade_counts(density_raster(lon, lat).counts))


@st.cache_data(max_entries=6, show_spinner=False)
def _globe_counts(key: tuple, _xyz) -> np.ndarray:
    lon, lat = sphere_to_lonlat(_xyz)
    return density_raster(lon, lat, width=GLOBE_RASTER[0], height=GLOBE_RASTER[1]).counts


@st.cache_resource(show_spinner="Loading the offline encoder (once per server)…")
def _encoder():
    """The one sentence encoder of the server, shared by every session."""
    return load_encoder()


@st.cache_resource(max_entries=4, show_spinner="Indexing every document for search (once per fit)…")
def _folded(key: tuple, _view):
    """The fit's correction folded into per-document factors (``key`` names the fit version)."""
    return fold_correction(_view.run.embeddings, *_view.model.transform_.correction())


@st.cache_data(max_entries=32, show_spinner="Searching every document…")
def _search(key: tuple, query: str, k: int, _view):
    """Nearest documents and clusters of a query (``key`` names the fit version)."""
    vector = embed_query(_encoder(), query, dim=_view.run.embeddings.shape[1])
    return search_documents(
        vector,
        _view.run.embeddings,
        k=k,
        transform=_view.model.transform,
        mean_directions=_view.model.mean_directions_,
        folded=_folded(key, _view),
    )


def _search_hits(view):
    """The semantic search box; its hits (or None)."""
    left, right = st.columns([5, 1])
    query = left.text_input(
        "Search by meaning",
        key=keys.MAP_QUERY,
        placeholder="e.g. a relational database server",
        help="Embedded by the offline encoder of the corpus and compared (cosine, after the "
        "fit's anisotropy correction) with every document; the nearest are starred on the map",
    )
    top_k = int(
        right.number_input("Nearest", min_value=1, max_value=500, value=20, key=keys.MAP_TOP_K)
    )
    if not query.strip():
        return None
    try:
        return _search((view.name, view.version), query.strip(), top_k, view)
    except ValueError as exc:
        st.info(f"Semantic search is not available for this fit: {exc}")
        return None


def _hits_table(view, hits, names) -> None:
    st.subheader("Nearest documents")
    best = ", ".join(
        f"{names[k]} ({s:.2f})"
        for k, s in zip(hits.clusters[:3], hits.cluster_similarity[:3], strict=True)
    )
    st.caption(f"Nearest clusters (cosine to their mean direction): {best}")
    table = documents_frame(
        view.run.frame,
        hits.rows,
        view.hard_labels,
        view.q,
        cluster_names=names,
        similarity=hits.similarity,
    )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        height=280,
        column_config={
            "similarity": st.column_config.NumberColumn(format="%.3f"),
            "probability": st.column_config.NumberColumn(format="%.3f"),
            "text": st.column_config.TextColumn(width="large"),
        },
    )


def _colour_values(view, colour_by: str, clusters_all):
    """The colour of every document: (codes, categories) or values, and a key naming them."""
    if colour_by == "cluster":
        return clusters_all, [str(k) for k in range(view.n_clusters)], None, ()
    if colour_by == "human category":
        return *view.human_codes, None, ()  # coded once per fit, not per rerun
    if colour_by == "document GIS":
        return None, None, np.asarray(view.gis.document, dtype=float), ()
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
    weights = np.asarray(weights, dtype=float)
    return None, None, weights[clusters_all], tuple(np.round(weights, 12).tolist())


def _wait_for_layout(layout) -> None:
    """A progress bar that polls the background layout and reruns the page when it ends."""

    @st.fragment(run_every=1.0)
    def poll():
        if not layout.running():
            st.rerun(scope="app")  # the layout is stored (or failed): redraw the whole page
        fraction, text = layout.progress()
        st.progress(
            fraction, text=f"UMAP layout in the background: {text}. The map updates by itself."
        )

    poll()


def _selection_panel(view, selected, names) -> None:
    """The selected documents, their human categories and clusters; send clusters to Mix & Export."""
    by_cluster, by_category = selection_breakdown(
        selected, view.hard_labels, view.human, view.n_clusters
    )
    clusters = by_cluster["cluster"].to_numpy()
    st.subheader(f"Selection: {len(selected):,} documents in {len(clusters)} clusters")
    by_cluster.insert(1, "label", [names[k] for k in clusters])
    by_cluster["GIS terms"] = [", ".join(view.labels[k].terms) for k in clusters]
    percent = st.column_config.NumberColumn(format="percent")
    left, right = st.columns([3, 2])
    left.dataframe(
        by_cluster, hide_index=True, width="stretch", column_config={"share_of_cluster": percent}
    )
    if by_category is not None:
        right.dataframe(
            by_category, hide_index=True, width="stretch", column_config={"share": percent}
        )
    docs = documents_frame(view.run.frame, selected[:200], view.hard_labels, view.q)
    st.dataframe(docs, hide_index=True, width="stretch", height=240)
    current = st.session_state.get(keys.MAP_ADJUST)
    if current is None or current.fit != view.name:
        current = ClusterAdjustments(view.name)
    c1, c2, c3 = st.columns([1.4, 1, 1.2])
    if c1.button("Exclude these clusters on Mix & Export", key=keys.MAP_EXCLUDE):
        st.session_state[keys.MAP_ADJUST] = current.excluding(clusters)
    factor = c2.number_input("Boost factor", 0.1, 100.0, 2.0, 0.5, key=keys.MAP_BOOST_FACTOR)
    if c3.button("Boost these clusters on Mix & Export", key=keys.MAP_BOOST):
        st.session_state[keys.MAP_ADJUST] = current.boosting(clusters, factor)


def _pending_adjustments(view) -> None:
    """What this session sends to Mix & Export from the Map, with a button to clear it."""
    pending = st.session_state.get(keys.MAP_ADJUST)
    if pending is None or pending.fit != view.name or pending.empty:
        return
    left, right = st.columns([4, 1])
    left.info(
        f"Sent to Mix & Export's per-domain editor: **{pending.summary}**.",
        icon=":material/tune:",
    )
    if right.button("Clear", key=keys.MAP_CLEAR):
        del st.session_state[keys.MAP_ADJUST]
        st.rerun()


def main() -> None:
    view = shared.current_view()
    layout = map_layout(view)
    st.title("Map of the hypersphere")
    st.caption(
        f"{view.n_documents:,} documents on S^{view.model.n_features_in_ - 1}, "
        f"K = {view.n_clusters} clusters, anisotropy R0 = {view.model.anisotropy_:.3f}"
    )

    colour_options = ["cluster", "document GIS", "chosen weight"]
    if view.human is not None:
        colour_options.insert(1, "human category")
    c1, c2, c3, c4, c5 = st.columns([1.2, 1.3, 1.1, 1.1, 1.1])
    shape = c1.segmented_control(
        "View", ["Globe 3D", "Map 2D"], default="Globe 3D", key=keys.MAP_SHAPE
    )
    colour_by = c2.selectbox("Colour by", colour_options, key=keys.MAP_COLOUR)
    density_mode = c3.selectbox(
        "Density layer",
        DENSITY_MODES,
        key=keys.MAP_DENSITY,
        help="Every document, binned on the server, under the points: coloured like the "
        "points, by count only, or hidden",
    )
    cap = int(
        c4.number_input(
            "Point cap",
            min_value=500,
            max_value=200_000,
            value=DEFAULT_POINT_CAP,
            step=5_000,
            key=keys.MAP_CAP,
            help="At most this many interactive points go to the browser",
        )
    )
    want_umap = c5.toggle(
        "UMAP layout",
        value=app_state.env_flag("GEM_APP_UMAP", True),
        key=keys.MAP_UMAP,
        help="UMAP (haversine output) of a sample, the other documents placed by their nearest "
        "sample neighbours; computed once per fit in the background and stored in the workspace",
    )

    hits = _search_hits(view)
    umap = layout.umap() if want_umap else None
    if umap is not None:
        xyz_all = umap[1]
        layout_name, layout_key = "UMAP (haversine output metric)", ("umap", layout.stamp)
    else:
        with st.spinner("Projecting every document…"):
            xyz_all = layout.principal()
        layout_name = "spherical projection (top principal directions of the cluster means)"
        layout_key = ("principal",)
        if want_umap:
            layout.start()
            if layout.error:
                st.warning(f"UMAP failed ({layout.error}); showing the spherical projection.")
            else:
                _wait_for_layout(layout)
    rows = layout.point_rows(cap)
    st.caption(
        f"Showing **{len(rows):,} of {view.n_documents:,}** documents as points (cap {cap:,}, "
        f"stratified by cluster), **all {view.n_documents:,} in the density layer** · "
        f"layout: {layout_name}"
    )

    clusters_all = view.hard_labels
    codes, categories, values, colour_key = _colour_values(view, colour_by, clusters_all)
    clusters = clusters_all[rows]
    if codes is None:
        colour = values[rows]
    elif colour_by == "cluster":
        colour = clusters
    else:
        colour = np.asarray(categories, dtype=object)[codes[rows]].astype(str)
    xyz = np.asarray(xyz_all[rows], dtype=np.float64)
    centres = cluster_centres(xyz_all, clusters_all, view.n_clusters)
    texts = view.run.frame["text"].to_numpy()[rows]
    names = shared.cluster_options(view)
    common = dict(
        hover=[str(t)[:200] for t in texts],
        rows=rows,
        clusters=clusters,
        centre_labels=names,
        colour_title=colour_by,
        categories=categories,
    )
    hit_text = None
    if hits is not None:
        snippets = view.run.frame["text"].to_numpy()[hits.rows]
        hit_text = [
            f"#{i + 1} ({s:.2f}): {str(t)[:150]}"
            for i, (s, t) in enumerate(zip(hits.similarity, snippets, strict=True))
        ]
        hit_xyz = np.asarray(xyz_all[hits.rows], dtype=np.float64)
    key = (view.name, view.version, *layout_key)
    if shape == "Map 2D":
        density = None
        if density_mode != "off":
            by_colour = density_mode == "by colour"
            density = _density_png(
                (*key, density_mode, colour_by, colour_key),
                xyz_all,
                codes if by_colour else None,
                len(categories) if by_colour and categories else 0,
                values if by_colour else None,
                tuple(cluster_palette(len(categories))) if by_colour and categories else (),
            )
        lon, lat = sphere_to_lonlat(xyz)
        clon, clat = sphere_to_lonlat(np.nan_to_num(centres))
        fig = flat_map_figure(
            lon,
            lat,
            colour,
            centres_lonlat=np.column_stack([clon, clat]),
            density_image=density,
            highlight_lonlat=None if hits is None else np.column_stack(sphere_to_lonlat(hit_xyz)),
            highlight_text=hit_text,
            **common,
        )
        event = st.plotly_chart(
            fig,
            width="stretch",
            on_select="rerun",
            key=keys.MAP_FLAT,
            selection_mode=("points", "box", "lasso"),
        )
        selected = selected_rows(event)
        if selected.size:
            picked = clusters_all[selected]
            st.session_state[keys.MAP_CLUSTER] = names[int(np.bincount(picked).argmax())]
            _selection_panel(view, selected, names)
    else:
        counts = _globe_counts(key, xyz_all) if density_mode != "off" else None
        st.plotly_chart(
            globe_figure(
                xyz,
                colour,
                centres=centres,
                density_counts=counts,
                highlight_xyz=None if hits is None else hit_xyz,
                highlight_text=hit_text,
                **common,
            ),
            width="stretch",
            key=keys.MAP_GLOBE,
        )
        if counts is not None:
            st.caption("The globe's surface is shaded by the number of documents (all of them).")

    _pending_adjustments(view)
    if hits is not None:
        _hits_table(view, hits, names)

    st.subheader("Documents of a cluster")
    left, right = st.columns([1, 2])
    choice = left.selectbox(
        "Cluster", names, key=keys.MAP_CLUSTER, help="Or select points on the 2D map"
    )
    query = right.text_input(
        "Filter its documents (words)", key=keys.MAP_SEARCH, help="A substring filter"
    )
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
