"""bench.ingest_speed's imagededup rows say why they did not run, instead of failing the run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import ingest_speed


def test_phash_row_without_imagededup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "imagededup" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    run = ingest_speed.imagededup_phash(tmp_path, tmp_path, 1)
    assert run.seconds is None
    assert "not installed" in run.reason
    row = ingest_speed.outside_row("imagededup PHash", "2", "-", run, 3)
    assert row[4] == "not run"
    assert row[5] == run.reason


def test_cnn_row_without_another_python(tmp_path: Path) -> None:
    run = ingest_speed.imagededup_cnn(None, tmp_path, tmp_path, 1)
    assert run.seconds is None
    assert "--imagededup-python" in run.reason


def test_cnn_row_with_a_missing_python(tmp_path: Path) -> None:
    run = ingest_speed.imagededup_cnn(str(tmp_path / "no-python"), tmp_path, tmp_path, 1)
    assert run.seconds is None
    assert "did not run" in run.reason


@pytest.mark.slow
def test_cnn_row_when_the_script_fails(tmp_path: Path) -> None:
    """This project's Python has no torchvision (or, with it, no images here): a stated failure."""
    images = tmp_path / "images"
    images.mkdir()
    run = ingest_speed.imagededup_cnn(sys.executable, images, images, 1)
    assert run.seconds is None
    assert "failed (exit" in run.reason
