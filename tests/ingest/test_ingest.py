"""Ingestion through real Redis, real Celery worker processes and the real Milvus Lite server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.ingest.conftest import ROOT, IngestEnv, wait_for
from tests.ingest.images import copy_exact, heavy_folder, mirror_copies, photo_folder

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def stored_paths(env: IngestEnv) -> list[str]:
    """Every path of every stored row (a path stored twice would show twice)."""
    return [path for record in env.store().iterate() for path in record.all_paths]


def test_folder_ingest_counts_add_up_and_rerun_skips(ingest_env: IngestEnv, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    originals = photo_folder(folder, 150)
    exact = copy_exact(originals[:20], folder / "backup")
    mirrored = mirror_copies(originals[20:30], folder / "edits")
    ingest_env.start_worker(concurrency=2)

    summary = ingest_env.ingest_json(str(folder), "--wait")
    everything = originals + exact + mirrored
    assert summary["state"] == "done"
    assert summary["queued"] == summary["ingested"] == len(everything)
    assert summary["skipped"] == 0 and summary["failed"] == []
    assert summary["exact_duplicates"] == 20
    assert isinstance(summary["near_duplicates"], int) and summary["near_duplicates"] >= 10
    assert ingest_env.store().count() == 160  # one row per distinct content
    assert sorted(stored_paths(ingest_env)) == sorted(str(p) for p in everything)

    again = ingest_env.ingest_json(str(folder), "--wait")
    assert again["skipped"] == len(everything) and again["queued"] == again["ingested"] == 0
    assert ingest_env.store().count() == 160


def test_racing_producers_write_no_duplicate_rows(ingest_env: IngestEnv, tmp_path: Path) -> None:
    folder = tmp_path / "race"
    photos = photo_folder(folder, 120)
    ingest_env.start_worker(concurrency=2)
    producers = [
        subprocess.Popen(
            [sys.executable, "-m", "ingest", "ingest", str(folder), "--wait", "--json"],
            env=ingest_env.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    summaries = []
    for producer in producers:
        out, err = producer.communicate(timeout=180)
        assert producer.returncode == 0, out + err
        summaries.append(json.loads(out))
    assert all(s["state"] == "done" and s["failed"] == [] for s in summaries)
    assert ingest_env.store().count() == len(photos)
    assert sorted(stored_paths(ingest_env)) == sorted(str(p) for p in photos)


def test_worker_killed_mid_batch_loses_nothing(ingest_env: IngestEnv, tmp_path: Path) -> None:
    photos = heavy_folder(tmp_path / "heavy", 64)
    worker = ingest_env.start_worker(concurrency=1)
    started = ingest_env.ingest_json(str(tmp_path / "heavy"))
    job_id = str(started["job_id"])
    wait_for(lambda: ingest_env.ledger_progress(job_id).ingested >= 8, 60, "for the first batch")
    assert not ingest_env.ledger_progress(job_id).finished
    ingest_env.kill_worker(worker)  # SIGKILL, mid-batch: its message is not acknowledged

    ingest_env.start_worker(concurrency=1)
    # The unacknowledged batch comes back after the visibility timeout (6 s here).
    wait_for(lambda: ingest_env.ledger_progress(job_id).finished, 120, ingest_env.worker_logs())
    progress = ingest_env.ledger_progress(job_id)
    assert progress.ingested == progress.queued == len(photos) and progress.failed == 0
    assert ingest_env.store().count() == len(photos)
    assert sorted(stored_paths(ingest_env)) == sorted(str(p) for p in photos)


def test_redis_restart_then_resume_loses_nothing(ingest_env: IngestEnv, tmp_path: Path) -> None:
    photos = heavy_folder(tmp_path / "heavy", 64)
    ingest_env.start_worker(concurrency=1)
    started = ingest_env.ingest_json(str(tmp_path / "heavy"))
    job_id = str(started["job_id"])
    wait_for(lambda: ingest_env.ledger_progress(job_id).ingested >= 8, 60, "for the first batch")
    # Redis restarts without persistence: the queue and the ledger are gone.
    ingest_env.redis.stop()
    ingest_env.redis.start()
    unknown = ingest_env.run_cli("status", job_id, "--json")
    assert unknown.returncode == 1 and f"no job {job_id!r}" in unknown.stderr

    resumed = ingest_env.ingest_json("--resume", job_id, "--wait", timeout=240)
    assert resumed["state"] == "done" and resumed["failed"] == []
    assert resumed["ingested"] == resumed["queued"] == len(photos)
    assert ingest_env.store().count() == len(photos)
    assert sorted(stored_paths(ingest_env)) == sorted(str(p) for p in photos)


def test_milvus_outage_is_retried_with_backoff(ingest_env: IngestEnv, tmp_path: Path) -> None:
    from services.embedded import EmbeddedMilvus

    port = free_port()
    ingest_env.env["LOOKALIKE_MILVUS_URI"] = f"http://127.0.0.1:{port}"
    photos = photo_folder(tmp_path / "photos", 24)
    ingest_env.start_worker(concurrency=1)
    started = ingest_env.ingest_json(str(tmp_path / "photos"))
    time.sleep(3)  # the worker's first attempts find no Milvus and back off
    assert ingest_env.ledger_progress(str(started["job_id"])).ingested == 0
    with EmbeddedMilvus(tmp_path / "late-milvus", port) as server:
        ingest_env.milvus_uri = server.uri
        wait_for(
            lambda: ingest_env.ledger_progress(str(started["job_id"])).finished,
            90,
            ingest_env.worker_logs(),
        )
        assert ingest_env.store().count() == len(photos)
        assert "retrying" in ingest_env.worker_logs()


def test_poison_batch_is_split_and_quarantined(ingest_env: IngestEnv, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    photos = photo_folder(folder, 15)
    poison = folder / "photo_0007_POISON.jpg"
    photos[7].rename(poison)
    photos[7] = poison
    ingest_env.env["LOOKALIKE_MAX_CRASHES"] = "1"
    worker = ingest_env.start_worker(app="tests.ingest.crashing_worker", concurrency=1)
    summary = ingest_env.ingest_json(str(folder), "--wait", timeout=240)
    assert summary["state"] == "done"
    assert summary["failed"] == [
        {
            "path": str(poison),
            "error": "crashed the worker 1 times while being processed; quarantined, not retried",
        }
    ]
    assert summary["ingested"] == 14
    assert ingest_env.store().count() == 14
    assert worker.poll() is None  # the worker survived its pool processes' deaths
