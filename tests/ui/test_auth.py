"""The password gate: its failure limits and comparison alone, then through AppTest sessions."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from streamlit.testing.v1 import AppTest

from tests.ui.conftest import APP, ROOT, UiStack
from ui import auth
from ui.navigation import PAGES

PASSWORD = "open sesame"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failure_limit_refuses_beyond_the_limit_until_the_oldest_failure_ages_out() -> None:
    clock = Clock()
    limit = auth.FailureLimit(3, 60.0, clock)
    for _ in range(3):
        assert limit.retry_after() == 0.0
        limit.record()
        clock.now += 10  # failures at 1000, 1010, 1020
    assert clock.now == 1030
    assert limit.retry_after() == pytest.approx(30.0)  # until 1060, when the first is 60 s old
    clock.now = 1060
    assert limit.retry_after() == 0.0
    limit.record()
    assert limit.retry_after() == pytest.approx(10.0)  # now the one at 1010 is the oldest


def test_password_matches_only_the_same_text() -> None:
    assert auth.password_matches("s3cret", "s3cret")
    for other in ("", "s3cre", "s3cret ", "S3cret", "s3cret" * 100):
        assert not auth.password_matches(other, "s3cret")


def test_no_page_script_lies_where_streamlit_runs_pages_by_itself() -> None:
    # Streamlit serves every script in a pages/ folder beside the main script as a page of its
    # own, outside the navigation (and so outside the gate).
    assert not (APP.parent / "pages").exists()
    views = {p.stem for p in (ROOT / "ui" / "views").glob("*.py")}
    assert views == {view.name for view in PAGES}


@pytest.fixture
def gated(ui_stack: UiStack) -> Iterator[None]:
    os.environ["LOOKALIKE_UI_PASSWORD"] = PASSWORD
    try:
        yield
    finally:
        del os.environ["LOOKALIKE_UI_PASSWORD"]


def titles(app: AppTest) -> list[str]:
    return [t.value for t in app.title]


def attempt(app: AppTest, password: str) -> AppTest:
    app.text_input(key="auth-password").input(password)
    next(b for b in app.button if b.label == "Log in").click().run()
    return app


def new_session() -> AppTest:
    """Another session of the same server process (the caches, and the server-wide failure
    count, are kept)."""
    return AppTest.from_file(str(APP), default_timeout=120).run()


@pytest.mark.integration
def test_before_the_password_a_session_sees_only_the_prompt(ui_stack: UiStack, gated: None) -> None:
    # (Each page's URL is the browser test's: AppTest cannot open a page that the navigation
    # does not hold, which is the point.)
    app = ui_stack.app()
    assert not app.exception
    assert titles(app) == ["lookalike"]
    assert [t.label for t in app.text_input] == ["Password"]
    assert [b.label for b in app.button] == ["Log in"]
    assert not (app.metric or app.caption or app.markdown or app.sidebar.children)


@pytest.mark.integration
def test_the_password_admits_the_session_and_log_out_ends_it(
    ui_stack: UiStack, gated: None
) -> None:
    app = attempt(ui_stack.app(), PASSWORD)
    assert not app.exception
    assert titles(app) == ["Search"]
    app.switch_page("views/collection.py").run()
    assert titles(app) == ["Collection"]
    assert app.metric  # the collection's counts
    app.button(key="auth-log-out").click().run()
    assert titles(app) == ["lookalike"]
    assert not app.metric
    assert "auth-admitted" not in app.session_state


@pytest.mark.integration
def test_a_session_gets_five_tries_then_none_not_even_the_right_one(
    ui_stack: UiStack, gated: None
) -> None:
    app = ui_stack.app()
    for _ in range(auth.SESSION_MAX_FAILURES - 1):
        assert attempt(app, "guess").error[0].value == "Wrong password."
    assert attempt(app, "guess").error[0].value.startswith("Wrong password. No more tries for")
    assert attempt(app, PASSWORD).error[0].value.startswith("Too many wrong passwords")
    assert titles(app) == ["lookalike"]
    # A new session (a reload) starts a fresh count.
    assert titles(attempt(new_session(), PASSWORD)) == ["Search"]


@pytest.mark.integration
def test_the_server_refuses_tries_when_sessions_together_fail_too_often(
    ui_stack: UiStack, gated: None
) -> None:
    ui_stack.app()  # clears the caches: a fresh server-wide count
    failed = 0
    while failed < auth.SERVER_MAX_FAILURES:
        app = new_session()  # one wrong password per session: no session limit is reached
        attempt(app, "guess")
        failed += 1
    app = attempt(new_session(), PASSWORD)
    assert app.error[0].value.startswith("Too many wrong passwords")
    assert titles(app) == ["lookalike"]


@pytest.mark.integration
def test_an_empty_password_shows_nothing_but_the_refusal(ui_stack: UiStack, gated: None) -> None:
    # Settings refuse it (`lookalike ui` exits 2 before Streamlit starts); a server started some
    # other way stops at its first run, before any page or form.
    os.environ["LOOKALIKE_UI_PASSWORD"] = ""
    app = ui_stack.app()
    assert "LOOKALIKE_UI_PASSWORD" in app.exception[0].message
    assert titles(app) == [] and not app.text_input and not app.button
