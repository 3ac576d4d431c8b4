"""The password gate in a real browser: ``lookalike ui`` with LOOKALIKE_UI_PASSWORD set.

Each test opens fresh browser contexts (new Streamlit sessions, no cookies) and checks both what
the page shows and every WebSocket frame the server sent: before the password, nothing of the
collection (file names, the collection's name, its folder) may reach the browser at all, on
any page's URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.ui.conftest import SAMPLES, TITLES, UiStack, nav_titles, running_ui

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.browser]

PASSWORD = "correct horse battery staple"
# Every URL the navigation serves (the default page is also "/"), and one it does not.
PATHS = ("", "search", "duplicates", "clusters", "ingest", "collection", "no-such-page")


@pytest.fixture(scope="module")
def gated_url(ui_stack: UiStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("ui-gate-log") / "ui.log"
    with running_ui({"LOOKALIKE_UI_PASSWORD": PASSWORD}, log) as (url, _):
        yield url


@dataclass
class Session:
    """A fresh browser context on one page, recording what the server sent it."""

    page: Any
    frames: list[bytes] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def received(self) -> bytes:
        return b"".join(self.frames)


@pytest.fixture
def session(browser: Any) -> Iterator[Any]:
    contexts = []

    def open_session() -> Session:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(60_000)
        opened = Session(page)

        def on_socket(socket: Any) -> None:
            socket.on(
                "framereceived",
                lambda payload: opened.frames.append(
                    payload if isinstance(payload, bytes) else payload.encode()
                ),
            )

        page.on("websocket", on_socket)
        page.on("request", lambda request: opened.requests.append(request.url))
        return opened

    yield open_session
    for context in contexts:
        context.close()


def secrets_of(stack: UiStack) -> list[bytes]:
    """Strings that only the collection's data contains."""
    return [name.encode() for name in SAMPLES] + [
        stack.collection.encode(),
        str(stack.photos).encode(),
    ]


def settle(page: Any) -> None:
    """Wait until the script run is over (no "Running" status), then a little more, so that
    anything a page would render after the prompt has had time to arrive."""
    page.wait_for_load_state("networkidle")
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden")
    page.wait_for_timeout(1500)


def assert_only_the_prompt(opened: Session, stack: UiStack) -> None:
    page = opened.page
    page.get_by_label("Password", exact=True).wait_for(timeout=30_000)
    settle(page)
    inputs = page.locator("input, textarea")
    assert inputs.count() == 1, page.inner_text("body")
    assert inputs.first.get_attribute("type") == "password"
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    assert page.locator("img, .js-plotly-plot").count() == 0
    text = page.inner_text("body")
    for word in ("Quarantine", "groups", "Schema contract", "Upload an image", "Log out"):
        assert word not in text, (word, text)
    received = opened.received()
    assert received, "no WebSocket frame was recorded"
    for secret in secrets_of(stack):
        assert secret not in received, secret
    assert not [url for url in opened.requests if urlsplit(url).path.startswith("/media/")]


def log_in(page: Any, password: str) -> None:
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()


def test_every_url_of_a_fresh_session_shows_only_the_password_prompt(
    gated_url: str, ui_stack: UiStack, session: Any
) -> None:
    for path in PATHS:
        opened = session()
        opened.page.goto(f"{gated_url}/{path}")
        assert_only_the_prompt(opened, ui_stack)


def test_a_wrong_password_shows_an_error_and_nothing_else(
    gated_url: str, ui_stack: UiStack, session: Any
) -> None:
    opened = session()
    opened.page.goto(f"{gated_url}/duplicates")
    log_in(opened.page, "open sesame")
    opened.page.get_by_text("Wrong password.").wait_for()
    assert_only_the_prompt(opened, ui_stack)
    assert opened.page.get_by_text("Wrong password.").count() == 1


def test_after_the_password_every_page_works_then_log_out_ends_the_session(
    gated_url: str, ui_stack: UiStack, session: Any
) -> None:
    opened = session()
    page = opened.page
    page.goto(f"{gated_url}/duplicates")
    log_in(page, PASSWORD)
    # The page asked for is the one shown once the password is given (no result kept yet).
    page.get_by_role("button", name=re.compile("^(Find duplicates|Recompute)$")).click()
    page.get_by_text(re.compile(r"^12 groups")).first.wait_for()
    page.get_by_role("button", name="Quarantine duplicates").first.wait_for()
    nav = page.locator('[data-testid="stSidebarNav"]')
    assert nav_titles(page) == TITLES

    nav.get_by_text("Search", exact=True).click()
    page.get_by_text("Upload an image").first.wait_for()
    page.locator("input[type=file]").set_input_files(
        str(ui_stack.photos / "copies" / "astronaut_mirrored.jpg")
    )
    page.get_by_text("astronaut_rotated.jpg").first.wait_for()
    nav.get_by_text("Clusters", exact=True).click()
    page.get_by_text("No cluster map yet").first.wait_for()
    nav.get_by_text("Ingest", exact=True).click()
    page.get_by_text("Start ingestion").first.wait_for()
    nav.get_by_text("Collection", exact=True).click()
    page.get_by_text("Schema contract").first.wait_for()
    assert ui_stack.collection in page.inner_text("body")
    assert page.get_by_text("Traceback").count() == 0

    page.get_by_role("button", name="Log out").click()
    page.get_by_label("Password", exact=True).wait_for()
    # The prompt can appear while the rerun is still on its way: Streamlit keeps the last page's
    # elements (already in this browser) until the run ends, then drops them.
    settle(page)
    assert ui_stack.collection not in page.inner_text("body")
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0
    page.reload()  # the same browser, a new session: still locked
    page.get_by_label("Password", exact=True).wait_for()
    page.goto(f"{gated_url}/collection")
    page.get_by_label("Password", exact=True).wait_for()
    settle(page)
    assert page.get_by_text("Schema contract").count() == 0
