"""``lookalike ui`` as a real process: stopping the command stops Streamlit, its child."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cli.stack.net import port_open
from tests.ui.conftest import running_ui

pytestmark = pytest.mark.slow


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid``, read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process exited meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_lookalike_ui_stops_streamlit(stop: signal.Signals, tmp_path: Path) -> None:
    env = {"LOOKALIKE_HOME": str(tmp_path / "home")}
    with running_ui(env, tmp_path / "ui.log") as (url, cli):
        [streamlit] = children_of(cli.pid)
        try:
            assert b"streamlit" in Path(f"/proc/{streamlit}/cmdline").read_bytes()
            port = urlsplit(url).port
            assert port is not None and port_open(port)
            cli.send_signal(stop)  # to the command only, as a service manager does
            assert cli.wait(30) == 0, (tmp_path / "ui.log").read_text()
            deadline = time.monotonic() + 5
            while running(streamlit) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not running(streamlit), "Streamlit outlived `lookalike ui`"
            assert not port_open(port)
        finally:
            if running(streamlit):
                os.kill(streamlit, signal.SIGKILL)
