"""Publish one ingestion batch to lookalike's workers from a Python app, without Celery.

    python enqueue.py --redis redis://127.0.0.1:6379/0 --job app-42 /photos/a.jpg s3://b/k.jpg

Copy ``services/queue.py``'s ``task_message``/``enqueue_batch`` (they need only ``redis``), or
import them where lookalike is installed, as here. Outcomes: docs/apps.md.
"""

from __future__ import annotations

import argparse
import time

import redis

from services.queue import enqueue_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("refs", nargs="+", help="local paths, s3://bucket/key or https:// URLs")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--job", required=True, help="your job id: outcomes are kept under it")
    parser.add_argument("--collection", default="images")
    parser.add_argument("--source", default="")
    parser.add_argument("--tag", action="append", default=[])
    options = parser.parse_args()
    client = redis.Redis.from_url(options.redis)
    items = [[ref, -1, ""] for ref in options.refs]  # size and change key unknown to the app
    batch_id = f"app-{time.time_ns()}"
    task_id = enqueue_batch(
        client, options.job, batch_id, items, options.collection, options.source, options.tag
    )
    print(task_id)  # noqa: T201 (a command-line example)


if __name__ == "__main__":
    main()
