"""`lookalike` is one command line: every command is there, whatever was imported first."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.ingest.conftest import ROOT

COMMANDS = {
    "demo", "up", "ui", "ingest", "status", "worker", "add", "search", "info", "dedup",
    "decide", "undo", "eval", "clusters", "sync", "watch", "version", "milvus", "migrate",
}  # fmt: skip


def _commands(first_import: str) -> set[str]:
    script = (
        f"import {first_import}\n"
        "import typer.main\n"
        "from cli.app import app\n"
        "group = typer.main.get_command(app)\n"
        "print(' '.join(sorted(group.commands)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


@pytest.mark.parametrize("first_import", ["services.store", "ingest.tasks", "ui.launch", "cli"])
def test_every_command_is_present_whatever_is_imported_first(first_import: str) -> None:
    assert _commands(first_import) >= COMMANDS


def test_the_console_command_is_the_cli_package() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["project"]["scripts"] == {"lookalike": "cli.app:app"}
