"""Compare: clusters against the human taxonomy: heatmap, Sankey, metrics, misalignments."""

from __future__ import annotations

import pandas as pd
import shared
import streamlit as st

from gem_app.app import session_keys as keys
from gem_app.viz import contingency_heatmap, sankey_figure

# the baselines of gem_app.evaluate.baselines shown beside GEM, fitted one after the other
BASELINES = {"kmeans": "k-means", "vmf-em": "vMF-EM (learned prior)"}


def main() -> None:
    view = shared.current_view()
    st.title("Compare with the human taxonomy")
    result = view.comparison
    if result is None:
        st.info(
            "This fit has no human label column. Map one on the Data page (e.g. a category "
            "column) and fit again to compare.",
            icon=":material/info:",
        )
        st.stop()

    names = dict(enumerate(view.label_names))

    def _flatten(records: list[dict]) -> pd.DataFrame:
        """Nested share lists as readable text ("a 40%, b 20%")."""
        flat = []
        for record in records:
            row = {}
            for key, value in record.items():
                if isinstance(value, list):
                    value = ", ".join(
                        f"{next(iter(v.values()))} {v.get('share', 0):.0%}"
                        if isinstance(v, dict)
                        else str(v)
                        for v in value
                    )
                row[key] = value
            flat.append(row)
        return pd.DataFrame(flat)

    m = st.columns(5)
    m[0].metric("NMI", f"{result.nmi:.3f}")
    m[1].metric("AMI", f"{result.ami:.3f}")
    m[2].metric("ARI", f"{result.ari:.3f}")
    m[3].metric("Purity", f"{result.purity:.3f}")
    m[4].metric("Aligned accuracy", f"{result.aligned_accuracy:.3f}")

    tab_heat, tab_sankey = st.tabs(["Aligned contingency", "Sankey"])
    with tab_heat:
        st.caption(
            "Rows: human categories; columns: clusters, reordered so Hungarian matches lie on the "
            "diagonal. Cells: share of the category's tokens."
        )
        st.plotly_chart(
            contingency_heatmap(result.aligned_table, cluster_labels=names), width="stretch"
        )
    with tab_sankey:
        min_share = st.slider(
            "Hide flows below (share of all tokens)",
            0.0,
            0.05,
            0.005,
            0.001,
            format="%.3f",
            key=keys.CMP_MIN_SHARE,
        )
        st.plotly_chart(
            sankey_figure(result.table, cluster_labels=names, min_share=min_share), width="stretch"
        )

    st.subheader("GEM and the baselines")
    run_baselines = st.toggle(
        "Include baselines (k-means, vMF-EM with a learned prior)", key=keys.CMP_BASELINES
    )
    results = {"GEM": result}
    if run_baselines:
        with st.status("Fitting the baselines…") as status:
            bar = st.progress(0.0)
            for i, (name, title) in enumerate(BASELINES.items()):
                bar.progress(i / len(BASELINES), text=f"{title} ({i + 1} of {len(BASELINES)})")
                results.update(view.baseline_comparisons((name,)))
            bar.empty()
            status.update(
                label="Baselines: " + ", ".join(BASELINES.values()),
                state="complete",
                expanded=False,
            )
    metrics = (
        pd.DataFrame({name: res.to_dict()["metrics"] for name, res in results.items()})
        .T.rename_axis("method")
        .reset_index()
    )
    st.dataframe(
        metrics,
        hide_index=True,
        width="stretch",
        key=keys.CMP_METRICS,
        column_config={
            c: st.column_config.NumberColumn(format="%.3f") for c in metrics.columns[1:]
        },
    )

    st.subheader("Misalignment report")
    left, right = st.columns(2)
    left.markdown(f"**Split categories** (largest cluster holds < {result.threshold:.0%})")
    left.dataframe(_flatten(result.split_categories), hide_index=True, width="stretch")
    right.markdown(f"**Mixed clusters** (largest category < {result.threshold:.0%})")
    right.dataframe(_flatten(result.mixed_clusters), hide_index=True, width="stretch")


shared.run_page(main)
