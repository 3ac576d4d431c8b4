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

from ingest.malloc import keep_freed_memory
from services.app import connect
from services.arrival_index import ArrivalIndex, arrival_codes
from services.code_feed import RedisCodeFeed
from services.embed import Embedder, create_embedder
from services.errors import (
    CollectionNotFoundError,
    LedgerUnavailableError,
    SourceUnavailableError,
    StoreUnavailableError,
)
from services.ingestion import MatchPolicy, ingest_paths
from services.ledger import CachedFile, JobLedger, files_cache_name
from services.queue import TASK_INGEST
from services.settings import Settings
from services.sources import Sources
from services.store import MilvusStore

log = logging.getLogger(__name__)

# Milvus, Redis or object storage out of reach: retried with backoff (about 10 minutes in all).
MAX_RETRIES = 10
# Redis out of reach: a retry is sent once it answers again, waiting this long at most.
REDIS_WAIT_SECONDS = 120.0
# Anything else a batch raises: retried this often, then each of its files fails with the reason.
UNEXPECTED_RETRIES = 2
QUARANTINED = "crashed the worker {n} times while being processed; quarantined, not retried"
GAVE_UP = "ingestion failed {n} times ({error}); not retried: `lookalike ingest --resume {job}`"

# One batch item: [path, size, mtime_ns] as stat()ed by the producer, or [s3://bucket/key,
# size, etag] as listed (JSON-friendly; services.sources.Entry).
Item = Sequence[Any]


@dataclass
class WorkerContext:
    """What a worker process builds once: settings, ledger, model, stores by collection."""

    settings: Settings
    ledger: JobLedger
    embedder: Embedder | None
    stores: dict[str, MilvusStore] = field(default_factory=dict)
    sources: Sources = field(default_factory=Sources)
    indexes: dict[str, ArrivalIndex] = field(default_factory=dict)

    def store(self, collection: str) -> MilvusStore:
        if collection not in self.stores:
            uri = self.settings.effective_milvus_uri
            # Workers start together on a fresh collection: one creates it, the others wait.
            with self.ledger.collection_lock(collection):
                lookalike = connect(
                    self.settings,
                    uri,
                    embedder=self.embedder,
                    load_model=False,
                    collection=collection,
                )
            self.stores[collection] = lookalike.store
        return self.stores[collection]

    def index(self, collection: str) -> ArrivalIndex | None:
        """This process's index of the codes stored in ``collection`` (loaded from Milvus on
        first use, then kept in step through the Redis feed); None with ``arrival_index=milvus``."""
        if self.settings.arrival_index == "milvus":
            return None
        store = self.store(collection)
        current = self.indexes.get(collection)
        if current is None or current.instance != store.instance:
            feed = RedisCodeFeed.from_url(self.settings.redis_url, collection, store.instance)
            codes = arrival_codes(
                self.settings.dup_max_hamming, patches=self.settings.arrival_patches
            )
            self.indexes[collection] = current = ArrivalIndex(store, feed, codes)
        return current

    def forget(self, collection: str) -> None:
        """The collection was dropped since it was opened: open it (and index it) anew."""
        self.stores.pop(collection, None)
        self.indexes.pop(collection, None)


_context: WorkerContext | None = None


def context(settings: Settings) -> WorkerContext:
    """This process's context, built on first use (in a worker: after the fork)."""
    global _context
    if _context is None:
        embedder = create_embedder(settings)
        if embedder is not None:
            _share_cores(settings)
        _context = WorkerContext(
            settings,
            JobLedger.from_url(settings.redis_url),
            embedder,
            sources=Sources(max_bytes=settings.max_source_bytes),
        )
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
    settings: Settings = app.conf.lookalike_settings

    @worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _load_once(**_: object) -> None:
        # Load the model in each worker process as it starts, not on the first batch.
        keep_freed_memory()
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
                log.error("batch %s crashed a worker %d times", batch_id, crashes - 1)
                reason = QUARANTINED.format(n=crashes - 1)
                batch = Batch(job_id, batch_id, items, collection, source, tags)
                return _split_or_fail(app, ctx, batch, reason)
            counts = run_batch(ctx, job_id, items, collection, source, tags or [])
            ctx.ledger.end_delivery(job_id, batch_id)
            return counts
        except Exception as exc:
            # Every way out of a batch is a retry or its files recorded: none may vanish.
            _forget_delivery(ctx, job_id, batch_id)
            if isinstance(exc, CollectionNotFoundError):
                ctx.forget(collection)  # dropped since it was opened: open it anew
            transient = isinstance(
                exc,
                StoreUnavailableError
                | LedgerUnavailableError
                | CollectionNotFoundError
                | SourceUnavailableError,
            )
            limit = MAX_RETRIES if transient else UNEXPECTED_RETRIES
            attempts = self.request.retries + 1
            if isinstance(exc, LedgerUnavailableError) and not ctx.ledger.wait_until_reachable(
                REDIS_WAIT_SECONDS
            ):
                # Redis is the broker too: a retry cannot be sent, and Celery would drop the
                # message. Left unacknowledged, it is delivered again once Redis is back.
                raise exc
            if self.request.retries < limit:
                log.warning(
                    "batch %s of job %s failed (attempt %d of %d): %s; retrying",
                    batch_id,
                    job_id,
                    attempts,
                    limit + 1,
                    _describe(exc),
                    exc_info=not transient,
                )
                raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
            log.exception("batch %s of job %s failed %d times", batch_id, job_id, attempts)
            reason = GAVE_UP.format(n=attempts, error=_describe(exc), job=job_id)
            batch = Batch(job_id, batch_id, items, collection, source, tags)
            if transient:  # an outage outlasted the retries: halving would only multiply them
                return _fail(ctx, batch, reason)
            # Something in the batch breaks it: halve it, so that only the culprit fails.
            return _split_or_fail(app, ctx, batch, reason)


def run_batch(
    ctx: WorkerContext,
    job_id: str,
    items: Sequence[Item],
    collection: str,
    source: str,
    tags: Sequence[str],
) -> dict[str, int]:
    """Store one batch through the core use case and record it. Safe to run twice."""
    settings = ctx.settings
    stats = {str(item[0]): f"{item[1]}:{item[2]}" for item in items}
    store = ctx.store(collection)
    cache = files_cache_name(collection, store.instance)
    paths = [str(item[0]) for item in items]
    previous = {
        path: entry.content_id
        for path, entry in zip(paths, ctx.ledger.cached_files(cache, paths), strict=True)
        if entry is not None and entry.content_id
    }
    outcome = ingest_paths(
        store,
        ctx.embedder,
        paths,
        locks=ctx.ledger,
        policy=MatchPolicy(
            settings.dup_max_hamming, settings.dup_min_cosine, patches=settings.arrival_patches
        ),
        max_pixels=settings.max_image_pixels,
        source=source,
        tags=tags,
        sources=ctx.sources,
        previous=previous,
        index=ctx.index(collection),
    )
    ctx.ledger.record_batch(
        job_id,
        cache,
        stored={r.path: CachedFile(stats.get(r.path, ""), r.id).encode() for r in outcome.records},
        failed={f.path: f.error for f in outcome.failures},
        near=outcome.near,
        exact=outcome.exact,
    )
    return {
        "stored": len(outcome.records),
        "failed": len(outcome.failures),
        "near": len(outcome.near),
        "exact": len(outcome.exact),
    }


@dataclass(frozen=True)
class Batch:
    """One task's arguments."""

    job_id: str
    batch_id: str
    items: list[Item]
    collection: str
    source: str
    tags: list[str] | None


def _split_or_fail(app: Celery, ctx: WorkerContext, batch: Batch, reason: str) -> dict[str, int]:
    """A batch that keeps failing (or killing its worker): halve it, until the image that
    breaks it stands alone; that one fails with ``reason``."""
    if len(batch.items) == 1:
        return _fail(ctx, batch, reason)
    middle = len(batch.items) // 2
    for half, part in enumerate((batch.items[:middle], batch.items[middle:])):
        args = [batch.job_id, f"{batch.batch_id}.{half}", part, batch.collection, batch.source]
        app.send_task(TASK_INGEST, args=[*args, batch.tags])
    log.warning("batch %s split in two (%s)", batch.batch_id, reason)
    ctx.ledger.end_delivery(batch.job_id, batch.batch_id)
    return {"stored": 0, "failed": 0, "near": 0, "exact": 0}


def _fail(ctx: WorkerContext, batch: Batch, reason: str) -> dict[str, int]:
    """Record every file of ``batch`` as failed with ``reason``."""
    failed = {str(item[0]): reason for item in batch.items}
    log.error("%d file(s) of job %s failed: %s", len(failed), batch.job_id, reason)
    ctx.ledger.record_batch(batch.job_id, None, stored={}, failed=failed)
    ctx.ledger.end_delivery(batch.job_id, batch.batch_id)
    return {"stored": 0, "failed": len(failed), "near": 0, "exact": 0}


def _describe(exc: BaseException) -> str:
    """An exception as a failure reason: ours say what failed; others name their type too."""
    from services.errors import LookalikeError

    return str(exc) if isinstance(exc, LookalikeError) else f"{type(exc).__name__}: {exc}"


def _forget_delivery(ctx: WorkerContext, job_id: str, batch_id: str) -> None:
    """A deliberate retry is not a crash; Redis may be the thing that is down, though."""
    with contextlib.suppress(LedgerUnavailableError):
        ctx.ledger.end_delivery(job_id, batch_id)
