"""The real worker with short retries: a transient failure is retried twice, a second apart at
most, then its files fail, so that a test sees the whole retry path in seconds."""

from __future__ import annotations

import ingest.tasks as tasks
from ingest.worker import app

__all__ = ["app"]

tasks.MAX_RETRIES = 2
tasks.backoff_seconds = lambda retries: 0.2 * (retries + 1)
