"""Ingestion from an S3 bucket (moto's server on 127.0.0.1) through real Redis, real Celery
worker processes and the real Milvus Lite server: objects are streamed, never copied to disk."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from cli.stack.net import free_port
from testkit.imagegen import make_photo_like
from testkit.s3server import S3Server
from tests.ingest.conftest import IngestEnv, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GOOD = 12
MAX_PIXELS = 100_000  # the "huge" object (400x300) is over it


def jpeg(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    buffer = io.BytesIO()
    make_photo_like(seed, size).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def s3(s3_server: S3Server, ingest_env: IngestEnv) -> Any:
    """A fresh S3 server state; the CLI and the workers configured for it."""
    s3_server.reset()
    ingest_env.env.update(s3_server.env())
    ingest_env.env["LOOKALIKE_MAX_IMAGE_PIXELS"] = str(MAX_PIXELS)
    return s3_server.client()


def good_bucket(s3: Any) -> list[str]:
    s3.create_bucket(Bucket="photos")
    keys = [f"shoot/day{i % 2}/img{i:02d}.jpg" for i in range(GOOD)]
    for i, key in enumerate(keys):
        s3.put_object(Bucket="photos", Key=key, Body=jpeg(20_000 + i))
    return [f"s3://photos/{key}" for key in keys]


def stored_paths(env: IngestEnv) -> list[str]:
    return sorted(path for record in env.store().iterate() for path in record.all_paths)


def test_a_bucket_is_ingested_then_skipped_by_etag_and_a_change_reingested(
    ingest_env: IngestEnv, s3: Any
) -> None:
    uris = good_bucket(s3)
    s3.put_object(Bucket="photos", Key="elsewhere/x.jpg", Body=jpeg(1))  # outside the prefix
    ingest_env.start_worker(concurrency=2)

    first = ingest_env.ingest_json("s3://photos/shoot/", "--wait")
    assert first["state"] == "done" and first["failed"] == [], first
    assert first["queued"] == first["ingested"] == GOOD
    assert stored_paths(ingest_env) == sorted(uris)

    again = ingest_env.ingest_json("s3://photos/shoot", "--wait")
    assert again["skipped"] == GOOD and again["queued"] == again["ingested"] == 0, again

    s3.put_object(Bucket="photos", Key="shoot/day0/img00.jpg", Body=jpeg(99_999))
    changed = ingest_env.ingest_json("s3://photos/shoot/", "--wait")
    assert changed["skipped"] == GOOD - 1 and changed["queued"] == changed["ingested"] == 1
    new = ingest_env.store().get([hashlib.sha256(jpeg(99_999)).hexdigest()])
    assert [r.path for r in new] == ["s3://photos/shoot/day0/img00.jpg"]


def test_bad_objects_fail_alone_with_clear_reasons(ingest_env: IngestEnv, s3: Any) -> None:
    uris = good_bucket(s3)
    bad = {
        "shoot/notes.jpg": b"these are notes, not a photo",
        "shoot/blob": b"\x00\x01 no suffix and no image",
        "shoot/empty.jpg": b"",
        "shoot/huge.jpg": jpeg(7, size=(400, 300)),
        "shoot/deleted.jpg": jpeg(8),
    }
    for key, body in bad.items():
        s3.put_object(Bucket="photos", Key=key, Body=body)
    # Listed and enqueued with no worker running; one object vanishes before it is read.
    started = ingest_env.ingest_json("s3://photos/shoot/", "s3://no-such-bucket/x/")
    s3.delete_object(Bucket="photos", Key="shoot/deleted.jpg")
    ingest_env.start_worker(concurrency=2)
    job_id = str(started["job_id"])
    wait_for(lambda: ingest_env.ledger_progress(job_id).finished, 120, ingest_env.worker_logs())

    progress = ingest_env.ledger_progress(job_id)
    assert progress.ingested == GOOD
    assert stored_paths(ingest_env) == sorted(uris)
    reasons = {f.path: f.error for f in progress.failures}
    assert sorted(reasons) == sorted(
        [f"s3://photos/{key}" for key in bad] + ["s3://no-such-bucket/x/"]
    )
    assert reasons["s3://no-such-bucket/x/"] == "bucket does not exist"
    assert "deleted since it was listed" in reasons["s3://photos/shoot/deleted.jpg"]
    assert reasons["s3://photos/shoot/empty.jpg"] == "empty file"
    assert "LOOKALIKE_MAX_IMAGE_PIXELS" in reasons["s3://photos/shoot/huge.jpg"]
    for key in ("shoot/notes.jpg", "shoot/blob"):
        assert "image" in reasons[f"s3://photos/{key}"], reasons


def test_an_unreachable_endpoint_is_retried_then_failed(
    ingest_env: IngestEnv, s3: Any, s3_server: S3Server
) -> None:
    uris = good_bucket(s3)
    started = ingest_env.ingest_json("s3://photos/shoot/")  # listed while the endpoint answers
    # The workers see an endpoint where nothing listens (storage gone after the listing).
    ingest_env.env.update(s3_server.env(f"http://127.0.0.1:{free_port()}"))
    ingest_env.start_worker(app="tests.ingest.fast_retry_worker")
    job_id = str(started["job_id"])
    wait_for(lambda: ingest_env.ledger_progress(job_id).finished, 120, ingest_env.worker_logs())

    progress = ingest_env.ledger_progress(job_id)
    assert progress.ingested == 0
    reasons = {f.path: f.error for f in progress.failures}
    assert sorted(reasons) == sorted(uris)
    assert all(
        "failed 3 times" in r and "cannot reach object storage" in r for r in reasons.values()
    )
    logs = ingest_env.worker_logs()
    assert "retrying" in logs


def test_access_denied_fails_those_objects_alone(ingest_env: IngestEnv, tmp_path: Path) -> None:
    """moto enforcing IAM: the user may list and read the bucket, except under private/."""
    server = S3Server(tmp_path / "moto-iam.log", enforce_access=True)
    server.start()
    try:
        server.user_with_policy(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                    {
                        "Effect": "Deny",
                        "Action": "s3:GetObject",
                        "Resource": "arn:aws:s3:::photos/private/*",
                    },
                ],
            }
        )
        s3 = server.client()
        s3.create_bucket(Bucket="photos")
        for i, key in enumerate(["open/a.jpg", "open/b.jpg", "private/c.jpg"]):
            s3.put_object(Bucket="photos", Key=key, Body=jpeg(30_000 + i))
        ingest_env.env.update(server.env())
        ingest_env.start_worker()
        summary = ingest_env.ingest_json("s3://photos/", "--wait")
    finally:
        server.stop()
    assert summary["ingested"] == 2
    assert summary["failed"] == [
        {
            "path": "s3://photos/private/c.jpg",
            "error": "access denied (AccessDenied): check the credentials",
        }
    ]


def test_an_endpoint_unreachable_while_listing_fails_the_command(
    ingest_env: IngestEnv, s3_server: S3Server
) -> None:
    ingest_env.env.update(s3_server.env(f"http://127.0.0.1:{free_port()}"))
    result = ingest_env.run_cli("ingest", "s3://photos/shoot/")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot reach object storage for s3://photos/shoot/" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_dedup_quarantines_objects_and_undo_puts_them_back(ingest_env: IngestEnv, s3: Any) -> None:
    uris = good_bucket(s3)
    copies = {"backup/img00.jpg": 20_000, "backup/img01.jpg": 20_001}  # exact copies of two
    for key, seed in copies.items():
        s3.put_object(Bucket="photos", Key=key, Body=jpeg(seed))
    s3.create_bucket(Bucket="quarantine")
    ingest_env.start_worker(concurrency=2)
    summary = ingest_env.ingest_json("s3://photos/", "--wait")
    assert summary["failed"] == [], summary

    moved = ingest_env.run_cli(
        "dedup", "--exact-only", "--json", "--keep", "path:/shoot/", "--move-to",
        "s3://quarantine/run1",
    )  # fmt: skip
    assert moved.returncode == 0, moved.stdout + moved.stderr
    result = json.loads(moved.stdout)
    manifest = str(result["manifest"])
    assert manifest.startswith("s3://quarantine/run1/.lookalike-manifest-")
    targets = sorted(a["target"] for a in result["actions"])
    assert targets == [f"s3://quarantine/run1/photos/{key}" for key in sorted(copies)]
    assert sorted(stored_paths(ingest_env)) == sorted(uris)
    listed = s3.list_objects_v2(Bucket="photos", Prefix="backup/").get("Contents", [])
    assert listed == []

    restored = ingest_env.run_cli("undo", manifest, "--json")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    statuses = [o["status"] for o in json.loads(restored.stdout)["outcomes"]]
    assert statuses == ["restored", "restored"]
    for key, seed in copies.items():
        assert s3.get_object(Bucket="photos", Key=key)["Body"].read() == jpeg(seed)
    expected = sorted([*uris, *(f"s3://photos/{key}" for key in copies)])
    assert sorted(stored_paths(ingest_env)) == expected
