"""How the UI process is started (by ``lookalike ui`` alone, or as a child of ``lookalike up``):
its command line and where it is reached."""

from __future__ import annotations

import sys
from pathlib import Path

from services.settings import Settings

APP = Path(__file__).resolve().parent / "app.py"


def streamlit_argv(settings: Settings) -> list[str]:
    """``streamlit run ui/app.py`` on the configured address and port, with no telemetry and no
    file watcher (a deployed UI does not reload itself)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        settings.ui_address,
        "--server.port",
        str(settings.ui_port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",
    ]


def local_host(settings: Settings) -> str:
    """Where this machine reaches the UI: its address, or loopback when it listens on all."""
    return "127.0.0.1" if settings.ui_address in {"0.0.0.0", "::"} else settings.ui_address


def url(settings: Settings) -> str:
    return f"http://{local_host(settings)}:{settings.ui_port}"
