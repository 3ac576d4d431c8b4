"""Ingestion through real Redis, real Celery worker processes and the real Milvus Lite server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from services.hashing import hamming
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


def test_skips_follow_milvus_not_a_cache_left_in_redis(
    ingest_env: IngestEnv, tmp_path: Path
) -> None:
    """The Redis outlives the Milvus data (a system Redis; `.lookalike` deleted to start over):
    the files cache of the old collection must not make the new one skip anything."""
    from services.store import drop_collection

    folder = tmp_path / "photos"
    photos = photo_folder(folder, 40)
    ingest_env.start_worker(concurrency=2)
    first = ingest_env.ingest_json(str(folder), "--wait")
    assert first["ingested"] == len(photos) and first["skipped"] == 0

    drop_collection(ingest_env.milvus_uri, ingest_env.collection)  # the Milvus data is gone
    again = ingest_env.ingest_json(str(folder), "--wait")
    assert again["state"] == "done" and again["failed"] == []
    assert again["skipped"] == 0 and again["queued"] == again["ingested"] == len(photos)
    assert sorted(stored_paths(ingest_env)) == sorted(str(p) for p in photos)

    # Rows removed behind the cache's back (another tool, a dedup --delete) are not skipped.
    store = ingest_env.store()
    gone = [r.id for r in store.iterate() if r.path in {str(p) for p in photos[:5]}]
    store.delete(gone)
    third = ingest_env.ingest_json(str(folder), "--wait")
    assert third["queued"] == third["ingested"] == 5 and third["skipped"] == len(photos) - 5
    assert ingest_env.store().count() == len(photos)


def test_a_second_home_against_the_same_redis_ingests_everything(
    ingest_env: IngestEnv, tmp_path: Path
) -> None:
    """Two Milvus servers (two LOOKALIKE_HOMEs), one Redis, the same folder and collection name."""
    from cli.stack.milvus_lite import EmbeddedMilvus

    folder = tmp_path / "photos"
    photos = photo_folder(folder, 30)
    ingest_env.start_worker(concurrency=2)
    assert ingest_env.ingest_json(str(folder), "--wait")["ingested"] == len(photos)

    with EmbeddedMilvus(tmp_path / "second-home", free_port()) as second:
        ingest_env.env["LOOKALIKE_MILVUS_URI"] = second.uri
        ingest_env.milvus_uri = second.uri
        for worker in ingest_env.workers:
            ingest_env.kill_worker(worker)
        ingest_env.start_worker(concurrency=2)
        summary = ingest_env.ingest_json(str(folder), "--wait")
        assert summary["skipped"] == 0 and summary["queued"] == summary["ingested"] == len(photos)
        assert sorted(stored_paths(ingest_env)) == sorted(str(p) for p in photos)
        for worker in ingest_env.workers:
            if worker.poll() is None:
                ingest_env.kill_worker(worker)


def test_racing_producers_write_no_duplicate_rows(ingest_env: IngestEnv, tmp_path: Path) -> None:
    folder = tmp_path / "race"
    photos = photo_folder(folder, 120)
    ingest_env.start_worker(concurrency=2)
    producers = [
        subprocess.Popen(
            [sys.executable, "-m", "cli", "ingest", str(folder), "--wait", "--json"],
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
    # Redis restarts with its data lost (a Redis without persistence, or its volume gone).
    ingest_env.redis.stop()
    shutil.rmtree(ingest_env.redis.data_dir)
    ingest_env.redis.start()
    unknown = ingest_env.run_cli("status", job_id, "--json")
    assert unknown.returncode == 1 and f"no job {job_id!r}" in unknown.stderr

    resumed = ingest_env.ingest_json("--resume", job_id, "--wait", timeout=240)
    assert resumed["state"] == "done" and resumed["failed"] == []
    assert resumed["ingested"] == resumed["queued"] == len(photos)
    assert ingest_env.store().count() == len(photos)
    assert sorted(stored_paths(ingest_env)) == sorted(str(p) for p in photos)


def test_redis_killed_mid_job_and_restarted_the_job_finishes_by_itself(
    ingest_env: IngestEnv, tmp_path: Path
) -> None:
    """SIGKILL of Redis (queue, ledger) in the middle of a job; started again on its data, the
    job ends with every content stored once and its counts adding up, with no --resume."""
    photos = heavy_folder(tmp_path / "heavy", 48)
    copies = copy_exact(photos[:6], tmp_path / "heavy" / "again")
    ingest_env.start_worker(concurrency=2)
    started = ingest_env.ingest_json(str(tmp_path / "heavy"))
    job_id = str(started["job_id"])
    wait_for(lambda: ingest_env.ledger_progress(job_id).ingested >= 8, 60, "for the first batch")
    pid = ingest_env.redis.pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    ingest_env.redis.stop()
    time.sleep(1)
    ingest_env.redis.start()

    wait_for(lambda: ingest_env.ledger_progress(job_id).state == "done", 180, "for the job")
    status = ingest_env.run_cli("status", job_id, "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    done = json.loads(status.stdout)
    assert done["failed"] == []
    assert done["ingested"] == done["queued"] == len(photos) + len(copies)
    assert ingest_env.store().count() == len(photos)  # one row per distinct content
    assert sorted(stored_paths(ingest_env)) == sorted(str(p) for p in (*photos, *copies))


def test_milvus_outage_is_retried_with_backoff(ingest_env: IngestEnv, tmp_path: Path) -> None:
    from cli.stack.milvus_lite import EmbeddedMilvus

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


def test_an_unexpected_exception_fails_only_its_file_and_the_job_finishes(
    ingest_env: IngestEnv, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    photos = photo_folder(folder, 20)
    culprit = folder / "photo_0005_RAISE.jpg"
    photos[5].rename(culprit)
    ingest_env.start_worker(app="tests.ingest.raising_worker", concurrency=2)
    summary = ingest_env.ingest_json(str(folder), "--wait", timeout=240)
    assert summary["state"] == "done"
    assert summary["queued"] == 20 and summary["ingested"] == 19
    failures = summary["failed"]
    assert isinstance(failures, list) and [f["path"] for f in failures] == [str(culprit)]
    reason = failures[0]["error"]
    assert "RuntimeError: injected fault on photo_0005_RAISE.jpg" in reason
    assert f"--resume {summary['job_id']}" in reason
    # The batch it was in was halved down to it: its neighbours are stored.
    assert sorted(stored_paths(ingest_env)) == sorted(str(p) for p in photos if p != photos[5])


def test_a_job_whose_messages_are_lost_is_reported_stalled_with_its_files(
    ingest_env: IngestEnv, tmp_path: Path
) -> None:
    """Messages lost outside lookalike (a queue purged, a broker that dropped them): `ingest
    --wait` and `status` stop waiting, name the files, and `--resume` finishes the job."""
    import redis

    from services.queue import QUEUE

    folder = tmp_path / "photos"
    photos = photo_folder(folder, 12)
    ingest_env.env["LOOKALIKE_STALL_SECONDS"] = "2"
    queued = ingest_env.ingest_json(str(folder))  # no worker yet: everything waits in the queue
    job = str(queued["job_id"])
    client = redis.Redis.from_url(ingest_env.env["LOOKALIKE_REDIS_URL"])
    assert client.llen(QUEUE) == 2  # 12 files in batches of 8
    client.delete(QUEUE)
    time.sleep(2.5)  # quiet for LOOKALIKE_STALL_SECONDS

    status = ingest_env.run_cli("status", job, "--json")
    assert status.returncode == 1, status.stdout + status.stderr
    reported = json.loads(status.stdout)
    assert reported["state"] == "stalled"
    assert reported["unaccounted"] == sorted(str(p) for p in photos)
    shown = ingest_env.run_cli("status", job)
    assert "stalled" in shown.stdout and f"--resume {job}" in " ".join(shown.stdout.split())

    ingest_env.start_worker(concurrency=2)
    resumed = ingest_env.ingest_json("--resume", job, "--wait")
    assert resumed["state"] == "done" and resumed["ingested"] == len(photos)
    assert sorted(stored_paths(ingest_env)) == sorted(str(p) for p in photos)


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
    store = MilvusStore.connect(ingest_env.milvus_uri, ingest_env.collection, contract)
    rows = {r.path: r for r in store.iterate(with_vectors=True)}
    for original, mirror in zip(originals, mirrored, strict=True):
        copy, source = rows[str(mirror)], rows[str(original)]
        assert copy.dup_of == source.id
        assert 0 <= copy.dup_hamming <= 8  # the mirrored pHash variant matches
        assert copy.clip is not None and source.clip is not None
        assert copy.dup_cosine == pytest.approx(float(np.dot(copy.clip, source.clip)), abs=1e-4)
        assert source.dup_of == ""  # it arrived first, with nothing like it stored


def test_add_records_a_near_copy_exactly_as_a_worker_does(
    ingest_env: IngestEnv, tiny_clip_dir: Path, tmp_path: Path
) -> None:
    """`lookalike add` and a worker run one use case: the same copy, stored either way, gets the
    same `dup_of`, Hamming and cosine (with a CLIP model, as users run it)."""
    from services.store import MilvusStore, stored_contract

    ingest_env.env["LOOKALIKE_CLIP_MODEL"] = str(tiny_clip_dir)
    ingest_env.env["LOOKALIKE_DUP_MIN_COSINE"] = "0.9999"  # random weights: pHash decides
    originals = photo_folder(tmp_path / "photos", 6)
    mirrored = mirror_copies(originals, tmp_path / "edits")
    ingest_env.start_worker(concurrency=2)
    assert ingest_env.ingest_json(str(tmp_path / "photos"), "--wait")["ingested"] == 6

    by_worker = ingest_env.ingest_json(str(mirrored[0]), "--wait")
    assert by_worker["ingested"] == 1 and by_worker["near_duplicates"] == 1
    added = ingest_env.run_cli("add", *(str(p) for p in mirrored[1:]), "--json")
    assert added.returncode == 0, added.stdout + added.stderr
    summary = json.loads(added.stdout)
    assert summary["stored"] == 5 and summary["near_duplicates"] == 5 and summary["failed"] == []

    contract = stored_contract(ingest_env.milvus_uri, ingest_env.collection)
    assert contract is not None
    store = MilvusStore.connect(ingest_env.milvus_uri, ingest_env.collection, contract)
    rows = {r.path: r for r in store.iterate(with_vectors=True)}
    for original, mirror in zip(originals, mirrored, strict=True):
        copy, source = rows[str(mirror)], rows[str(original)]
        assert copy.dup_of == source.id, mirror
        assert 0 <= copy.dup_hamming <= 8
        assert copy.dup_cosine == pytest.approx(float(np.dot(copy.clip, source.clip)), abs=1e-4)
    # The worker (the first copy) and add (the others) record the same thing: the distance from
    # the source's pHash to the closest flip or turn of the copy's, the codes an arrival queries
    # with (resampling and JPEG noise may leave a bit or two).
    for original, mirror in zip(originals, mirrored, strict=True):
        copy, source = rows[str(mirror)], rows[str(original)]
        variants = (copy.phash, *copy.phash_dihedral)
        closest = min(hamming(source.phash, v) for v in variants)
        assert copy.dup_hamming == closest <= 2, (mirror, copy.dup_hamming, closest)

    again = ingest_env.run_cli("add", str(mirrored[1]), "--json")
    assert json.loads(again.stdout)["stored"] == 1 and store.count() == 12  # nothing twice


def test_a_running_worker_matches_copies_of_photos_stored_by_add(
    ingest_env: IngestEnv, tmp_path: Path
) -> None:
    """`lookalike add` announces what it stores on the code feed: a worker whose arrival index
    was loaded before the add matches copies of those photos without a restart."""
    photos = photo_folder(tmp_path / "photos", 10)
    ingest_env.start_worker(concurrency=1)  # one process: its index is loaded by the first job
    first = ingest_env.ingest_json(*(str(p) for p in photos[:4]), "--wait")
    assert first["ingested"] == 4
    added = ingest_env.run_cli("add", *(str(p) for p in photos[4:]), "--json")
    assert added.returncode == 0, added.stdout + added.stderr
    assert json.loads(added.stdout)["stored"] == 6

    mirrored = mirror_copies(photos[4:], tmp_path / "edits")
    copies = ingest_env.ingest_json(str(tmp_path / "edits"), "--wait")

    assert copies["ingested"] == 6 and copies["near_duplicates"] == 6
    rows = {r.path: r for r in ingest_env.store().iterate()}
    for original, mirror in zip(photos[4:], mirrored, strict=True):
        assert rows[str(mirror)].dup_of == rows[str(original)].id, mirror


def test_a_file_changed_in_place_leaves_its_old_row(ingest_env: IngestEnv, tmp_path: Path) -> None:
    """No path is ever in two rows: a file whose content changed moves to the new content's row;
    the old content keeps its other paths, or its row goes when it has none left."""
    from testkit.imagegen import make_photo_like

    folder = tmp_path / "photos"
    photos = photo_folder(folder, 4)
    [backup] = copy_exact(photos[:1], folder / "backup")
    ingest_env.start_worker(concurrency=2)
    assert ingest_env.ingest_json(str(folder), "--wait")["ingested"] == 5
    before = {p: r.id for r in ingest_env.store().iterate() for p in r.all_paths}

    time.sleep(0.01)  # a new mtime
    make_photo_like(500, (96, 72)).save(photos[0], quality=90)  # shared content: one path left
    make_photo_like(501, (96, 72)).save(photos[1], quality=90)  # sole path: the old row goes
    again = ingest_env.ingest_json(str(folder), "--wait")
    assert again["queued"] == again["ingested"] == 2 and again["skipped"] == 3

    rows = {r.id: r.all_paths for r in ingest_env.store().iterate()}
    listed = [p for paths in rows.values() for p in paths]
    assert sorted(listed) == sorted(str(p) for p in (*photos, backup))  # each path exactly once
    assert rows[before[str(backup)]] == (str(backup),)
    assert before[str(photos[1])] not in rows
    assert len(rows) == 5
