"""The UI's password gate: with LOOKALIKE_UI_PASSWORD set, nothing is shown before it is given.

This protects a UI on a trusted network from casual access; it is not a user system. Beyond
localhost, serve the UI behind a reverse proxy with TLS and its own authentication (see README).
"""

from __future__ import annotations

import hmac

import streamlit as st

from ui import runtime

_AUTHED = "auth-ok"


def require_password() -> None:
    """Return when no password is set or this session gave it; otherwise ask and stop."""
    secret = runtime.settings().ui_password
    if secret is None or st.session_state.get(_AUTHED):
        return
    st.title("lookalike")
    with st.form("login"):
        given = st.text_input("Password", type="password", key="auth-password")
        submitted = st.form_submit_button("Enter")
    if submitted:
        if hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
            st.session_state[_AUTHED] = True
            st.session_state.pop("auth-password", None)
            st.rerun()
        st.error("Wrong password.")
    st.stop()
