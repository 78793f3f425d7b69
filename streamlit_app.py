"""GEM Studio: the Streamlit app (entry script). Start it with ``gem app``.

Thin pages in app_pages/ read widgets, call gem_app, and draw gem_app.viz figures. (They
are not in a folder named pages/: Streamlit treats such a folder beside the entry script as
an old-style multipage app and runs its files directly, bypassing st.navigation.) On the
first launch the bundled sample is fitted into the workspace, so every page has content
before any click.
"""

from __future__ import annotations

import streamlit as st

from app_pages import _shared
from gem_app.storage.workspace import WorkspaceCorruption

st.set_page_config(page_title="GEM Studio", page_icon=":material/public:", layout="wide")

PAGES = [
    st.Page("app_pages/data.py", title="Data", icon=":material/database:", url_path="data"),
    st.Page("app_pages/fit.py", title="Fit", icon=":material/tune:", url_path="fit"),
    st.Page(
        "app_pages/map.py", title="Map", icon=":material/public:", url_path="map", default=True
    ),
    st.Page(
        "app_pages/taxonomy.py",
        title="Taxonomy",
        icon=":material/account_tree:",
        url_path="taxonomy",
    ),
    st.Page(
        "app_pages/compare.py",
        title="Compare",
        icon=":material/compare_arrows:",
        url_path="compare",
    ),
    st.Page("app_pages/mix.py", title="Mix & Export", icon=":material/pie_chart:", url_path="mix"),
]

navigation = st.navigation(PAGES)
try:
    _shared.sidebar()
    navigation.run()
except (ValueError, OSError, KeyError, WorkspaceCorruption) as exc:
    _shared.show_error(exc)
