"""The UI's password gate: with LOOKALIKE_UI_PASSWORD set, a session sees nothing but the prompt
until it gives the password.

``ui/app.py`` asks :func:`admitted` before it builds the navigation: a session that is not
admitted gets a navigation holding only the login form (under every page's URL), so no page
script runs for it, whatever URL it opens. The password is compared in constant time. Wrong
passwords are limited twice: per session (:data:`SESSION_MAX_FAILURES` in
:data:`SESSION_WINDOW_S`) and per server process, all sessions together
(:data:`SERVER_MAX_FAILURES` in :data:`SERVER_WINDOW_S`), because a reload is a new session with
a fresh count. A try beyond a limit is refused without being compared.

This protects a UI on a trusted network from casual access; it is not a user system (one shared
password, no accounts, no audit trail beyond the log). Beyond localhost, serve the UI behind a
reverse proxy with TLS and its own authentication (see README).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import streamlit as st

from ui import runtime

log = logging.getLogger(__name__)

SESSION_MAX_FAILURES = 5
SESSION_WINDOW_S = 300.0
SERVER_MAX_FAILURES = 20
SERVER_WINDOW_S = 60.0

_ADMITTED = "auth-admitted"
_FAILURES = "auth-failures"
_FIELD = "auth-password"


class FailureLimit:
    """At most ``max_failures`` failures in any ``window_s`` seconds; thread-safe (every
    Streamlit session runs its script in a thread of its own)."""

    def __init__(
        self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._failures: deque[float] = deque()
        self._lock = threading.Lock()

    def retry_after(self) -> float:
        """Seconds until a try is allowed again; 0.0 when one is allowed now."""
        with self._lock:
            now = self._clock()
            while self._failures and self._failures[0] <= now - self.window_s:
                self._failures.popleft()
            if len(self._failures) < self.max_failures:
                return 0.0
            return self._failures[0] + self.window_s - now

    def record(self) -> None:
        with self._lock:
            self._failures.append(self._clock())


def password_matches(given: str, secret: str) -> bool:
    """Constant time in the content and the length of both (their digests are compared)."""
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(secret.encode()).digest()
    )


@st.cache_resource(show_spinner=False)
def _server_failures() -> FailureLimit:
    """Wrong passwords of every session of this server process."""
    return FailureLimit(SERVER_MAX_FAILURES, SERVER_WINDOW_S)


def _session_failures() -> FailureLimit:
    if _FAILURES not in st.session_state:
        st.session_state[_FAILURES] = FailureLimit(SESSION_MAX_FAILURES, SESSION_WINDOW_S)
    limit: FailureLimit = st.session_state[_FAILURES]
    return limit


def required() -> bool:
    """Whether a password is set."""
    return runtime.settings().ui_password is not None


def admitted() -> bool:
    """True when no password is set or this session gave it."""
    return not required() or bool(st.session_state.get(_ADMITTED))


def log_out() -> None:
    """End the session: its state is forgotten, the next run shows the prompt."""
    st.session_state.clear()


def login_form() -> None:
    """The prompt; on the right password the session is admitted and the app runs again (on the
    page whose URL was opened)."""
    st.title("lookalike")
    with st.form("login"):
        given = st.text_input("Password", type="password", key=_FIELD)
        submitted = st.form_submit_button("Log in")
    if submitted:
        _try(given)


def _try(given: str) -> None:
    secret = runtime.settings().ui_password
    if secret is None:  # admitted() lets every session in; a stale form does nothing
        return
    session, server = _session_failures(), _server_failures()
    wait = max(session.retry_after(), server.retry_after())
    if wait > 0:
        st.error(f"Too many wrong passwords: try again in {wait:.0f} s.")
        return
    if password_matches(given, secret.get_secret_value()):
        st.session_state.pop(_FIELD, None)
        st.session_state.pop(_FAILURES, None)
        st.session_state[_ADMITTED] = True
        st.rerun()
    session.record()
    server.record()
    log.warning("wrong UI password from %s", st.context.ip_address or "localhost")
    wait = max(session.retry_after(), server.retry_after())
    st.error("Wrong password." + (f" No more tries for {wait:.0f} s." if wait > 0 else ""))
