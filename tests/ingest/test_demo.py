"""`lookalike demo`: the README's main command, end to end in real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.embedded import port_open
from tests.conftest import free_port
from tests.ingest.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_the_stack_ingests_through_the_queue_and_finds_copies(
    tiny_clip_dir: Path, tmp_path: Path
) -> None:
    milvus_port, redis_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")} | {
        "LOOKALIKE_HOME": str(tmp_path / "home"),
        "LOOKALIKE_MILVUS_PORT": str(milvus_port),
        "LOOKALIKE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "LOOKALIKE_CLIP_MODEL": str(tiny_clip_dir),
        "LOOKALIKE_WORKER_CONCURRENCY": "1",
        "COLUMNS": "250",  # rich wraps tables to the terminal width
    }
    result = subprocess.run(
        [sys.executable, "-m", "ingest", "demo", "--no-serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    shown = " ".join(result.stdout.split())
    # 17 samples x (original, recompressed, 5 transforms, byte-exact backup) = 136 files.
    assert "(done): 136 queued, 136 ingested, 0 skipped" in shown
    assert "17 exact duplicates, 0 failed" in shown
    # The original's content is stored once, under the path that arrived first.
    assert "backup/astronaut.png" in shown or "originals/astronaut.png" in shown
    for name in ("astronaut_rotated.jpg", "astronaut_resized.jpg", "astronaut_tinted.jpg"):
        assert name in shown
    assert (tmp_path / "home" / "milvus.db").exists()
    assert not port_open(milvus_port) and not port_open(redis_port)  # all stopped
