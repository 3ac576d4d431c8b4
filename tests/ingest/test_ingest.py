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


def test_salted_folder_bad_files_fail_alone_with_reasons(
    ingest_env: IngestEnv, tmp_path: Path
) -> None:
    from tests.ingest.salted import write_bad_files, write_good_files

    folder = tmp_path / "salted"
    bad = write_bad_files(folder)
    good = write_good_files(folder)
    # As root, file modes do not stop reads: run the worker without the capabilities that
    # bypass them, so "unreadable" means unreadable, as it would for any other user.
    worker = ingest_env.start_worker(concurrency=1, drop_file_privileges=True)
    summary = ingest_env.ingest_json(str(folder), "--wait")

    failures = {Path(f["path"]).name: f["error"] for f in summary["failed"]}  # type: ignore[union-attr]
    assert set(failures) == set(bad), failures
    for name, word in bad.items():
        assert word in failures[name], (name, failures[name])
        assert failures[name] and "Traceback" not in failures[name]
    assert summary["ingested"] == len(good)
    assert summary["queued"] == len(good) + len(bad)
    assert sorted(
        Path(p).relative_to(folder).as_posix() for p in stored_paths(ingest_env)
    ) == sorted(good)
    assert worker.poll() is None
    ingest_env.wait_for_worker_alive(worker)


def test_clip_worker_records_duplicates_on_arrival(
    ingest_env: IngestEnv, tiny_clip_dir: Path, tmp_path: Path
) -> None:
    import numpy as np

    from services.store import MilvusStore, stored_contract

    ingest_env.env["LOOKALIKE_CLIP_MODEL"] = str(tiny_clip_dir)
    # The tiny model has random weights: its cosines say nothing, so only pHash matches count.
    ingest_env.env["LOOKALIKE_DUP_MIN_COSINE"] = "0.9999"
    folder = tmp_path / "photos"
    originals = photo_folder(folder, 10)
    mirrored = mirror_copies(originals, folder / "edits")  # walked after the originals
    ingest_env.start_worker(concurrency=1)
    summary = ingest_env.ingest_json(str(folder), "--wait")
    assert summary["ingested"] == 20 and summary["near_duplicates"] == 10

    contract = stored_contract(ingest_env.milvus_uri, ingest_env.collection)
    assert contract is not None
    assert (contract.clip_model, contract.clip_dim) == (str(tiny_clip_dir), 32)
    store = MilvusStore(ingest_env.milvus_uri, ingest_env.collection, contract)
    rows = {r.path: r for r in store.iterate(with_vectors=True)}
    for original, mirror in zip(originals, mirrored, strict=True):
        copy, source = rows[str(mirror)], rows[str(original)]
        assert copy.dup_of == source.id
        assert 0 <= copy.dup_hamming <= 8  # the mirrored pHash variant matches
        assert copy.clip is not None and source.clip is not None
        assert copy.dup_cosine == pytest.approx(float(np.dot(copy.clip, source.clip)), abs=1e-4)
        assert source.dup_of == ""  # it arrived first, with nothing like it stored
