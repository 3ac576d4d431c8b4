"""The lookalike UI: ``lookalike ui`` runs ``streamlit run ui/app.py``.

Pages: Search, Duplicates, Clusters, Ingest, Collection (``ui.navigation``), reachable only
through this navigation. While a password is set and not given, the navigation holds only the
login form, so no page runs for the session, whatever URL it opens. Settings come from the
environment (LOOKALIKE_*), read once per server process.
"""

from __future__ import annotations

import streamlit as st

from ui import auth
from ui.navigation import login_pages, pages

st.set_page_config(page_title="lookalike", page_icon=":material/search:", layout="wide")
if auth.admitted():
    navigation = st.navigation(pages())
    if auth.required():
        st.sidebar.button(
            "Log out", icon=":material/logout:", key="auth-log-out", on_click=auth.log_out
        )
else:
    navigation = st.navigation(login_pages(), position="hidden")
navigation.run()
