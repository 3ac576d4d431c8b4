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
``[job_id, batch_id, [[path, size, mtime_ns], ...], collection, source, tags]``; the workers
(``ingest/``) register it, producers (the CLI, the UI) only send it.
"""

from __future__ import annotations

import os

from celery import Celery

from services.settings import Settings

QUEUE = "lookalike.ingest"
TASK_INGEST = "lookalike.ingest_batch"


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
