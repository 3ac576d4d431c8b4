"""`lookalike demo`: the README's main command, end to end in real processes, as users run it:
with a CLIP model (the tiny saved one), two worker processes on the fresh demo collection, and a
Redis that outlives the stack (a system Redis), run twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.stack.net import port_open
from cli.stack.redis_server import RedisServer
from tests.conftest import free_port
from tests.ingest.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_with_clip_two_workers_and_a_lasting_redis_finishes_every_time(
    tiny_clip_dir: Path, tmp_path: Path
) -> None:
    milvus_port = free_port()
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")} | {
        "LOOKALIKE_HOME": str(home),
        "LOOKALIKE_MILVUS_PORT": str(milvus_port),
        "LOOKALIKE_REDIS_URL": redis_url,
        "LOOKALIKE_CLIP_MODEL": str(tiny_clip_dir),
        "LOOKALIKE_WORKER_CONCURRENCY": "2",
        "COLUMNS": "250",  # rich wraps tables to the terminal width
    }
    with RedisServer(redis_url, tmp_path / "system-redis"):
        for run in range(2):  # the second run finds the first run's ledger and files cache
            result = subprocess.run(
                [sys.executable, "-m", "cli", "demo", "--no-serve"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
            assert result.returncode == 0, f"run {run}\n{result.stdout}{result.stderr}"
            shown = " ".join(result.stdout.split())
            # 17 samples x (original, recompressed, 5 transforms, byte-exact backup) = 136 files.
            assert "(done): 136 queued, 136 ingested, 0 skipped" in shown, shown
            assert "17 exact duplicates, 0 failed" in shown
            # The original's content is stored once, under the path that arrived first.
            assert "backup/astronaut.png" in shown or "originals/astronaut.png" in shown
            for name in ("astronaut_rotated.jpg", "astronaut_resized.jpg", "astronaut_tinted.jpg"):
                assert name in shown
            assert "clustered the demo collection" in shown
            # Not one batch failed, not even once before a retry.
            worker_log = (home / "logs" / "worker.log").read_text(errors="replace")
            assert "failed (attempt" not in worker_log and "raised unexpected" not in worker_log
            assert not port_open(milvus_port)  # the stack stopped; the system Redis stays
            # The workers kept each new content's vector in the home's vector cache as they
            # stored it (one folder: the last run's dropped collection took its own with it).
            folders = list((home / "vectors").glob("demo-*"))
            assert len(folders) == 1, folders
            cached = sum(p.stat().st_size for p in folders[0].glob("*.ids")) // 32
            assert cached == 136 - 17, cached  # one row a content: the exact copies share one
        assert (home / "milvus.db").exists()
