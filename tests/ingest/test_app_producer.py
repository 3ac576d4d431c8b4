"""The queue contract for apps (docs/apps.md): a batch published without Celery, with a plain
Redis client (Python's services.queue.enqueue_batch, or examples/node/enqueue.js), is ingested
by a real worker, and its outcomes read from the ledger keys the page names."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from services.queue import QUEUE, TASK_INGEST, celery_app, enqueue_batch, task_message
from services.settings import Settings
from tests.ingest.conftest import ROOT, IngestEnv, wait_for
from tests.ingest.images import photo_folder

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def client_of(env: IngestEnv) -> redis.Redis:
    return redis.Redis.from_url(env.env["LOOKALIKE_REDIS_URL"], decode_responses=True)


def outcomes(client: redis.Redis, job_id: str) -> tuple[set[str], dict[str, str]]:
    """What an app reads: the stored paths and the failed ones with their reasons."""
    return client.smembers(f"lookalike:job:{job_id}:stored"), client.hgetall(  # type: ignore[return-value]
        f"lookalike:job:{job_id}:failed"
    )


def test_our_message_is_the_one_celery_sends(ingest_env: IngestEnv) -> None:
    """The contract is Celery's own wire format: same envelope, headers and body."""
    client = client_of(ingest_env)
    items = [["/p/a.jpg", 10, 123], ["s3://b/k.jpg", 5, "etag"]]
    args = ["job", "000001", items, "images", "src", ["t"]]
    celery_app(Settings.from_env(ingest_env.env)).send_task(TASK_INGEST, args=args, queue=QUEUE)
    enqueue_batch(client, *args)  # type: ignore[arg-type]
    ours, celerys = (json.loads(m) for m in client.lrange(QUEUE, 0, -1))
    assert ours.keys() == celerys.keys()
    assert ours["headers"].keys() == celerys["headers"].keys()
    assert ours["properties"].keys() == celerys["properties"].keys()
    for part in ("content-type", "content-encoding"):
        assert ours[part] == celerys[part]
    assert ours["properties"]["delivery_info"] == celerys["properties"]["delivery_info"]
    for name in ("task", "lang", "retries", "timelimit", "stamped_headers", "stamps", "eta"):
        assert ours["headers"][name] == celerys["headers"][name], name
    body = [json.loads(base64.b64decode(m["body"])) for m in (ours, celerys)]
    assert body[0] == body[1] == [args, {}, body[1][2]]
    assert task_message(*args)["headers"]["id"] != task_message(*args)["headers"]["id"]


def test_a_batch_published_with_a_plain_redis_client_is_stored(
    ingest_env: IngestEnv, tmp_path: Path
) -> None:
    photos = photo_folder(tmp_path / "photos", 3)
    (tmp_path / "photos" / "bad.jpg").write_bytes(b"not an image")
    refs = [*map(str, photos), str(tmp_path / "photos" / "bad.jpg")]
    ingest_env.start_worker()
    client = client_of(ingest_env)
    enqueue_batch(
        client, "app-1", "b1", [[r, -1, ""] for r in refs], ingest_env.collection, "app", ["x"]
    )
    wait_for(lambda: sum(map(len, outcomes(client, "app-1"))) == 4, 60, ingest_env.worker_logs())
    stored, failed = outcomes(client, "app-1")
    assert stored == set(map(str, photos))
    assert list(failed) == [str(tmp_path / "photos" / "bad.jpg")]
    rows = list(ingest_env.store().iterate())
    assert sorted(r.path for r in rows) == sorted(map(str, photos))
    assert all(r.source == "app" and r.tags == ("x",) for r in rows)


def test_the_node_producer(ingest_env: IngestEnv, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    photos = photo_folder(tmp_path / "photos", 2)
    ingest_env.start_worker()
    argv = [node, str(ROOT / "examples" / "node" / "enqueue.js")]
    argv += ["--redis", ingest_env.env["LOOKALIKE_REDIS_URL"], "--job", "node-1"]
    argv += ["--collection", ingest_env.collection, "--source", "node", *map(str, photos)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip()) == 36  # the task id, a UUID
    client = client_of(ingest_env)
    wait_for(lambda: len(outcomes(client, "node-1")[0]) == 2, 60, ingest_env.worker_logs())
    assert {r.source for r in ingest_env.store().iterate()} == {"node"}
