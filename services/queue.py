"""The ingestion queue: its contract (queue and task names, the JSON arguments) and the Celery
configuration that every producer and worker shares: Redis broker, at-least-once delivery.

Delivery guarantees, and why:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged after its task
  finishes, so a worker that dies mid-batch leaves it to be delivered again;
- ``visibility_timeout`` (LOOKALIKE_VISIBILITY_TIMEOUT): Redis re-delivers unacknowledged
  messages of a vanished worker after this long; it must exceed the longest task;
- ``worker_prefetch_multiplier=1``: a batch is already many images; prefetching more would hold
  work hostage in a busy or dying process;
- writes are upserts keyed by content hash and the ledger counts by path, so a batch delivered
  twice writes and counts nothing twice.

A task is ``TASK_INGEST`` on ``QUEUE`` with the JSON arguments
``[job_id, batch_id, [[ref, size, change], ...], collection, source, tags]`` (version
``QUEUE_CONTRACT_VERSION``, docs/apps.md): ``ref`` is a local path, an ``s3://bucket/key`` or an
``https://`` URL; ``change`` the file's ``mtime_ns`` or the object's ETag (``services.sources``).
The workers (``ingest/``) register it; producers (the CLI, the UI) send it through Celery, and
an app without Celery with :func:`enqueue_batch`, which writes the same message with a plain
Redis client (Celery's message protocol 2, JSON body, kombu's Redis transport envelope).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery

from services.settings import Settings

QUEUE = "lookalike.ingest"
TASK_INGEST = "lookalike.ingest_batch"
# The version of the message and of the outcomes apps read (docs/apps.md); raised on a change
# that an app written for the previous one would get wrong.
QUEUE_CONTRACT_VERSION = 1


def celery_app(settings: Settings) -> Celery:
    """A Celery app configured for ``settings``, without tasks: producers send by name."""
    app = Celery("lookalike", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency or os.cpu_count() or 1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # Sweep for abandoned messages every few seconds (kombu's default is 10 s x 10).
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 3)),
            "unacked_restore_throttle": 1,
            # A worker SIGKILLed during a sweep leaves the sweep's mutex behind; kombu's
            # default of 300 s would stall every re-delivery for five minutes.
            "unacked_mutex_expire": 15,
        },
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    app.conf.lookalike_settings = settings
    return app


def live_workers(settings: Settings, timeout: float = 1.0) -> list[str]:
    """Names of the workers that answer a ping within ``timeout`` seconds."""
    try:
        replies = celery_app(settings).control.ping(timeout=timeout)
    except Exception:  # the broker is down: no live workers, the caller reports the ledger
        return []
    return sorted(name for reply in replies for name in reply)


def task_message(
    job_id: str,
    batch_id: str,
    items: Sequence[Sequence[Any]],
    collection: str,
    source: str = "",
    tags: Sequence[str] = (),
    *,
    task_id: str | None = None,
) -> dict[str, Any]:
    """The message that asks a worker to ingest ``items`` (each ``[ref, size, change]``), as
    kombu's Redis transport keeps it: Celery protocol 2 headers, the JSON body in base64."""
    task_id = task_id or str(uuid.uuid4())
    args = [job_id, batch_id, [list(item) for item in items], collection, source, list(tags)]
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    body = json.dumps([args, {}, embed]).encode()
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": TASK_INGEST,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": repr(args)[:1024],
            "kwargsrepr": "{}",
            "origin": f"{os.getpid()}@{socket.gethostname()}",
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": QUEUE},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }


def enqueue_batch(
    client: redis.Redis,
    job_id: str,
    batch_id: str,
    items: Sequence[Sequence[Any]],
    collection: str,
    source: str = "",
    tags: Sequence[str] = (),
) -> str:
    """Publish one batch for the workers with a plain Redis client (no Celery); returns the
    task id. The outcomes land in the job ledger under ``job_id`` (docs/apps.md)."""
    message = task_message(job_id, batch_id, items, collection, source, tags)
    client.lpush(QUEUE, json.dumps(message))
    return str(message["headers"]["id"])
