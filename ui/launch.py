"""How the UI process is started: ``lookalike ui`` on its own, or as a child of ``lookalike up``."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from ingest.stack import ProcessSpec
from services.embedded import port_open
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


def _local_host(settings: Settings) -> str:
    """Where this machine reaches the UI: its address, or loopback when it listens on all."""
    return "127.0.0.1" if settings.ui_address in {"0.0.0.0", "::"} else settings.ui_address


def url(settings: Settings) -> str:
    return f"http://{_local_host(settings)}:{settings.ui_port}"


def process_spec(settings: Settings, env: Mapping[str, str] | None = None) -> ProcessSpec:
    """The UI as a child of the stack; ready once its port accepts connections."""
    host = _local_host(settings)
    return ProcessSpec(
        name="ui",
        argv=streamlit_argv(settings),
        address=url(settings),
        env=dict(env or {}),
        ready=lambda: port_open(settings.ui_port, host),
        ready_timeout=60.0,
    )
