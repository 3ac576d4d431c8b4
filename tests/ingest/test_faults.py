"""Faults with real processes, in the configuration users run: a CLIP model (the tiny saved
one), two worker processes, fresh collections. After each fault the stored rows are exactly the
distinct contents (no row twice, none missing) and the job's counts add up."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import pytest

from cli.stack.milvus_lite import EmbeddedMilvus
from services.store import MilvusStore, drop_collection, stored_contract
from tests.conftest import free_port
from tests.ingest.conftest import IngestEnv, wait_for
from tests.ingest.images import copy_exact, heavy_folder, photo_folder

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _contents(files: list[Path]) -> set[str]:
    return {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _rows(uri: str, collection: str) -> dict[str, tuple[str, ...]]:
    contract = stored_contract(uri, collection)
    assert contract is not None, f"no collection {collection}"
    store = MilvusStore.connect(uri, collection, contract, create=False)
    try:
        return {r.id: r.all_paths for r in store.iterate()}
    finally:
        store.close()


def test_fresh_clip_collections_with_two_worker_processes_never_fail_a_batch(
    ingest_env: IngestEnv, tiny_clip_dir: Path, tmp_path: Path
) -> None:
    ingest_env.env["LOOKALIKE_CLIP_MODEL"] = str(tiny_clip_dir)
    ingest_env.env["LOOKALIKE_INGEST_BATCH_SIZE"] = "4"  # many batches, both processes busy
    files = photo_folder(tmp_path / "photos", 24)
    ingest_env.start_worker(concurrency=2)
    collections = [f"fresh_{i}_{os.getpid()}" for i in range(5)]
    try:
        for collection in collections:
            ingest_env.env["LOOKALIKE_COLLECTION"] = collection
            summary = ingest_env.ingest_json(str(tmp_path / "photos"), "--wait")
            assert summary["state"] == "done" and summary["failed"] == [], summary
            assert summary["ingested"] == len(files)
            rows = _rows(ingest_env.milvus_uri, collection)
            assert set(rows) == _contents(files)
        logs = ingest_env.worker_logs()
        assert "failed (attempt" not in logs and "raised unexpected" not in logs
    finally:
        for collection in collections:
            drop_collection(ingest_env.milvus_uri, collection)


def test_milvus_killed_mid_job_then_restarted_the_job_finishes(
    ingest_env: IngestEnv, tiny_clip_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    home = tmp_path / "milvus-home"
    server = EmbeddedMilvus(home, port)
    server.start()
    try:
        ingest_env.env["LOOKALIKE_MILVUS_URI"] = server.uri
        ingest_env.env["LOOKALIKE_CLIP_MODEL"] = str(tiny_clip_dir)
        photos = heavy_folder(tmp_path / "heavy", 48)
        copies = copy_exact(photos[:5], tmp_path / "heavy" / "copies")
        ingest_env.start_worker(concurrency=2)
        job = str(ingest_env.ingest_json(str(tmp_path / "heavy"))["job_id"])
        wait_for(lambda: ingest_env.ledger_progress(job).ingested >= 8, 90, "a first batch")
        assert server.pid is not None
        os.killpg(server.pid, signal.SIGKILL)  # mid-job, as a crash or the OOM killer would
        server.stop()
        server = EmbeddedMilvus(home, port)
        server.start()  # the same data, the same address
        wait_for(lambda: ingest_env.ledger_progress(job).finished, 240, ingest_env.worker_logs())
        progress = ingest_env.ledger_progress(job)
        assert progress.failed == 0, progress.failures
        assert progress.ingested == progress.queued == len(photos) + len(copies)
        rows = _rows(server.uri, ingest_env.collection)
        assert set(rows) == _contents(photos)  # every content once
        assert sorted(p for paths in rows.values() for p in paths) == sorted(
            str(p) for p in (*photos, *copies)
        )
    finally:
        server.stop()
