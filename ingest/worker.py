"""Entry point of a worker process: ``celery -A ingest.worker worker`` (or ``lookalike worker``).

Settings are read here, once, at the worker's start.
"""

from __future__ import annotations

from ingest.celery_app import create_app
from services.settings import Settings

app = create_app(Settings.from_env())
