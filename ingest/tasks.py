"""The ingestion task: a thin adapter that runs the core pipeline on one batch and records it.

A task takes a batch of file references, decodes each once, computes metadata, pHash and (unless
hash-only) CLIP in one forward pass, finds each new image's best duplicate already stored, upserts
into Milvus and records the outcome in the job ledger. The model and the Milvus client are created
once per worker process, after the fork, on first use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init

from ingest.ledger import JobLedger
from services.app import connect
from services.arrival import find_matches, with_matches
from services.embed import Embedder, create_embedder
from services.errors import LedgerUnavailableError, StoreUnavailableError
from services.pipeline import analyze_batch
from services.records import ImageRecord
from services.settings import Settings
from services.store import MilvusStore

log = logging.getLogger(__name__)

MAX_RETRIES = 10
QUARANTINED = "crashed the worker {n} times while being processed; quarantined, not retried"

# One batch item: [path, size, mtime_ns] as stat()ed by the producer (JSON-friendly).
Item = Sequence[Any]


@dataclass
class WorkerContext:
    """What a worker process builds once: settings, ledger, model, stores by collection."""

    settings: Settings
    ledger: JobLedger
    embedder: Embedder | None
    stores: dict[str, MilvusStore] = field(default_factory=dict)

    def store(self, collection: str) -> MilvusStore:
        if collection not in self.stores:
            uri = self.settings.effective_milvus_uri
            lookalike = connect(
                self.settings, uri, embedder=self.embedder, load_model=False, collection=collection
            )
            self.stores[collection] = lookalike.store
        return self.stores[collection]


_context: WorkerContext | None = None


def context(settings: Settings) -> WorkerContext:
    """This process's context, built on first use (in a worker: after the fork)."""
    global _context
    if _context is None:
        embedder = create_embedder(settings)
        if embedder is not None:
            _share_cores(settings)
        _context = WorkerContext(settings, JobLedger.from_url(settings.redis_url), embedder)
    return _context


def _share_cores(settings: Settings) -> None:
    """Split the cores among worker processes instead of each torch taking them all."""
    import torch

    cores = os.cpu_count() or 1
    processes = settings.worker_concurrency or cores
    torch.set_num_threads(max(1, cores // processes))


def backoff_seconds(retries: int) -> float:
    """Exponential backoff capped at a minute, each wait cut to a random 50-100 %."""
    return float(min(60.0, 2.0**retries) * (0.5 + random.random() / 2))


def register(app: Celery) -> None:
    """Register lookalike's tasks (and the per-process set-up) on ``app``."""
    from ingest.celery_app import TASK_INGEST

    settings: Settings = app.conf.lookalike_settings

    @worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _load_once(**_: object) -> None:
        # Load the model in each worker process as it starts, not on the first batch.
        context(settings)

    @app.task(bind=True, name=TASK_INGEST, max_retries=MAX_RETRIES)  # type: ignore[untyped-decorator]
    def ingest_batch(
        self: Task,
        job_id: str,
        batch_id: str,
        items: list[Item],
        collection: str,
        source: str = "",
        tags: list[str] | None = None,
    ) -> dict[str, int]:
        ctx = context(settings)
        try:
            crashes = ctx.ledger.start_delivery(job_id, batch_id)
            if crashes > settings.max_crashes:
                return _split_or_quarantine(
                    app, ctx, job_id, batch_id, items, collection, source, tags, crashes - 1
                )
            counts = run_batch(ctx, job_id, items, collection, source, tags or [])
            ctx.ledger.end_delivery(job_id, batch_id)
            return counts
        except (StoreUnavailableError, LedgerUnavailableError) as exc:
            log.warning("batch %s of job %s: %s; retrying", batch_id, job_id, exc)
            _forget_delivery(ctx, job_id, batch_id)
            raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc


def run_batch(
    ctx: WorkerContext,
    job_id: str,
    items: Sequence[Item],
    collection: str,
    source: str,
    tags: Sequence[str],
) -> dict[str, int]:
    """Analyze, match, upsert and record one batch. Safe to run twice on the same batch."""
    settings = ctx.settings
    paths = [str(item[0]) for item in items]
    stats = {str(item[0]): f"{item[1]}:{item[2]}" for item in items}
    outcome = analyze_batch(
        paths, ctx.embedder, max_pixels=settings.max_image_pixels, source=source, tags=tags
    )
    store = ctx.store(collection)
    with ctx.ledger.content_locks(collection, [r.id for r in outcome.records]):
        stored = {r.id: r for r in store.get([r.id for r in outcome.records])}
        fresh, fresh_variants, exact = _split_fresh(outcome.records, outcome.variants, stored)
        matches = find_matches(
            store,
            fresh,
            fresh_variants,
            max_hamming=settings.dup_max_hamming,
            min_cosine=settings.dup_min_cosine,
        )
        by_id = {r.id: r for r in with_matches(fresh, matches)}
        store.upsert([by_id.get(r.id, r) for r in outcome.records], stored=stored)
    near = [r.path for r, m in zip(fresh, matches, strict=True) if m is not None]
    ctx.ledger.record_batch(
        job_id,
        collection,
        stored={r.path: stats.get(r.path, "") for r in outcome.records},
        failed={f.path: f.error for f in outcome.failures},
        near=near,
        exact=exact,
    )
    return {
        "stored": len(outcome.records),
        "failed": len(outcome.failures),
        "near": len(near),
        "exact": len(exact),
    }


def _split_fresh(
    records: Sequence[ImageRecord],
    variants: Sequence[Sequence[bytes]],
    stored: dict[str, ImageRecord],
) -> tuple[list[ImageRecord], list[Sequence[bytes]], list[str]]:
    """New contents (first occurrence in the batch) and the paths that are exact duplicates."""
    fresh: list[ImageRecord] = []
    fresh_variants: list[Sequence[bytes]] = []
    exact: list[str] = []
    seen: set[str] = set()
    for record, record_variants in zip(records, variants, strict=True):
        if record.id in stored:
            if record.path not in stored[record.id].all_paths:
                exact.append(record.path)
        elif record.id in seen:
            exact.append(record.path)
        else:
            seen.add(record.id)
            fresh.append(record)
            fresh_variants.append(record_variants)
    return fresh, fresh_variants, exact


def _split_or_quarantine(
    app: Celery,
    ctx: WorkerContext,
    job_id: str,
    batch_id: str,
    items: list[Item],
    collection: str,
    source: str,
    tags: list[str] | None,
    crashes: int,
) -> dict[str, int]:
    """A batch that keeps killing its worker: halve it, until the poison image stands alone."""
    from ingest.celery_app import TASK_INGEST

    if len(items) > 1:
        middle = len(items) // 2
        for half, part in enumerate((items[:middle], items[middle:])):
            app.send_task(
                TASK_INGEST, args=[job_id, f"{batch_id}.{half}", part, collection, source, tags]
            )
        log.warning("batch %s crashed a worker %d times; split in two", batch_id, crashes)
    else:
        path = str(items[0][0])
        log.error("%s crashed a worker %d times; quarantined", path, crashes)
        ctx.ledger.record_batch(
            job_id, collection, stored={}, failed={path: QUARANTINED.format(n=crashes)}
        )
    ctx.ledger.end_delivery(job_id, batch_id)
    return {"stored": 0, "failed": 0 if len(items) > 1 else 1, "near": 0, "exact": 0}


def _forget_delivery(ctx: WorkerContext, job_id: str, batch_id: str) -> None:
    """A deliberate retry is not a crash; Redis may be the thing that is down, though."""
    with contextlib.suppress(LedgerUnavailableError):
        ctx.ledger.end_delivery(job_id, batch_id)
