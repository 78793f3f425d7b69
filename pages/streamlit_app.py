"""GEM Studio: the Streamlit app (entry script). Start it with ``gem app``.

The entry sits *inside* pages/, beside the thin pages it navigates. Streamlit serves a
folder named ``pages/`` that sits beside the entry script as an old-style multipage app:
a first visit to a deep URL (``/mix``) on a fresh server would run that page alone, without
this script (no navigation, no sidebar, no error handling). With the entry inside pages/,
there is no ``pages/pages/`` and every URL goes through ``st.navigation`` below.

Streamlit puts this script's folder on ``sys.path`` while the app runs, so the pages import
their shared helpers as ``import shared``. On the first launch the bundled sample is fitted
into the workspace, so every page has content before any click.
"""

from __future__ import annotations

import shared
import streamlit as st

from gem_app.storage.manifest import WorkspaceCorruption

st.set_page_config(page_title="GEM Studio", page_icon=":material/public:", layout="wide")

MAP = st.Page("map.py", title="Map", icon=":material/public:", url_path="map")


def _home() -> None:
    """The root URL ``/``: the Map page, at its own URL."""
    st.switch_page(MAP)


# Streamlit serves its default page at "/" only: a default Map would make /map (a shared link
# to the map) a "Page not found". The default is a hidden page that switches to Map instead,
# so "/" opens the map and every page, Map included, answers at its own url_path.
PAGES = [
    st.Page(_home, title="GEM Studio", url_path="home", default=True, visibility="hidden"),
    st.Page("data.py", title="Data", icon=":material/database:", url_path="data"),
    st.Page("fit.py", title="Fit", icon=":material/tune:", url_path="fit"),
    MAP,
    st.Page("taxonomy.py", title="Taxonomy", icon=":material/account_tree:", url_path="taxonomy"),
    st.Page("compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page("evaluate.py", title="Evaluate", icon=":material/science:", url_path="evaluate"),
    st.Page("mix.py", title="Mix & Export", icon=":material/pie_chart:", url_path="mix"),
]

navigation = st.navigation(PAGES)
try:
    shared.sidebar()
    navigation.run()
except (ValueError, OSError, KeyError, WorkspaceCorruption) as exc:
    shared.show_error(exc)
