"""The lookalike UI: ``lookalike ui`` runs ``streamlit run ui/app.py``.

Pages: Search, Duplicates, Clusters, Ingest, Collection. Settings come from the environment
(LOOKALIKE_*), read once per server process.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui.auth import require_password

PAGES = Path(__file__).resolve().parent / "pages"

st.set_page_config(page_title="lookalike", page_icon=":material/search:", layout="wide")
require_password()
navigation = st.navigation(
    [
        st.Page(PAGES / "search.py", title="Search", icon=":material/search:", default=True),
        st.Page(PAGES / "duplicates.py", title="Duplicates", icon=":material/content_copy:"),
        st.Page(PAGES / "clusters.py", title="Clusters", icon=":material/scatter_plot:"),
        st.Page(PAGES / "ingest.py", title="Ingest", icon=":material/upload:"),
        st.Page(PAGES / "collection.py", title="Collection", icon=":material/database:"),
    ]
)
navigation.run()
