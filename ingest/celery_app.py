"""The workers' Celery application: the shared queue configuration (``services.queue``) with
lookalike's tasks registered (``ingest.tasks``)."""

from __future__ import annotations

import os

from celery import Celery

from ingest import tasks
from services.queue import QUEUE, celery_app
from services.settings import Settings


def create_app(settings: Settings) -> Celery:
    """A configured Celery app for ``settings``, with lookalike's tasks registered."""
    app = celery_app(settings)
    tasks.register(app)
    return app


def worker_argv(
    settings: Settings, *, loglevel: str = "INFO", hostname: str | None = None
) -> list[str]:
    """Arguments of ``celery worker`` with our defaults (after ``celery -A ingest.worker``)."""
    argv = [
        "worker",
        f"--loglevel={loglevel}",
        "--queues",
        QUEUE,
        "--concurrency",
        str(settings.worker_concurrency or os.cpu_count() or 1),
        "--pool",
        "prefork",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv += ["--hostname", hostname]
    return argv
