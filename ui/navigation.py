"""The UI's one navigation: its pages, and the login form that stands in for all of them.

The page scripts live in ``ui/views/``, a folder Streamlit does not run as pages of its own (it
would ``ui/pages/``, beside the main script, outside any navigation and so outside the gate).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ui import auth

VIEWS = Path(__file__).resolve().parent / "views"


@dataclass(frozen=True)
class View:
    """One page: its script ``ui/views/<name>.py``, served at ``/<name>``."""

    name: str
    title: str
    icon: str


PAGES = (
    View("search", "Search", ":material/search:"),  # the default page, also at /
    View("duplicates", "Duplicates", ":material/content_copy:"),
    View("clusters", "Clusters", ":material/scatter_plot:"),
    View("ingest", "Ingest", ":material/upload:"),
    View("collection", "Collection", ":material/database:"),
)


def pages() -> list[st.Page]:
    """Every page, titled, for an admitted session."""
    return [
        st.Page(
            VIEWS / f"{view.name}.py",
            title=view.title,
            icon=view.icon,
            url_path=view.name,
            default=view is PAGES[0],
        )
        for view in PAGES
    ]


def login_pages() -> list[st.Page]:
    """The login form under every page's URL: a direct URL gets the prompt (not "page not
    found"), and once the password is given the app runs again on that same page (Streamlit
    identifies a page by its URL path)."""
    return [
        st.Page(
            auth.login_form,
            title="Log in",
            icon=":material/lock:",
            url_path=view.name,
            default=view is PAGES[0],
        )
        for view in PAGES
    ]
