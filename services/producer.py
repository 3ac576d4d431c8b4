"""The producer: list the given folders and buckets, skip what is stored unchanged, enqueue batches.

Every run is a job. Its manifest (roots and options) is written under ``LOOKALIKE_HOME/jobs`` so
that ``--resume`` works even after Redis lost everything; its progress lives in the ledger.
Skipping is cheap first (path + size + change key in the ledger's files cache, no read: the
mtime for a file, the ETag for an ``s3://`` object), then, for local files only, exact (sha256
of the bytes, looked up in Milvus, and the path already among the row's paths): an object would
have to be downloaded for that, which costs what ingesting it costs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from celery import Celery

from services.errors import StoreError, UnknownJobError
from services.ledger import CachedFile, JobLedger, files_cache_name
from services.queue import QUEUE, TASK_INGEST
from services.records import ImageRecord
from services.settings import Settings
from services.sources import Entry, Sources, scheme_of
from services.store import MilvusStore, stored_contract

log = logging.getLogger(__name__)

_CHUNK = 512  # files examined per round trip to Redis and Milvus


@dataclass(frozen=True)
class IngestRequest:
    roots: tuple[str, ...]
    recursive: bool = True
    source: str = ""
    tags: tuple[str, ...] = ()
    collection: str = "images"


@dataclass(frozen=True)
class Item:
    """One entry as the producer saw it; sent to the worker as [path, size, change]:
    [path, size, mtime_ns] for a file, [s3://bucket/key, size, etag] for an object."""

    path: str
    size: int
    change: int | str

    @property
    def stat_key(self) -> str:
        return f"{self.size}:{self.change}"


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


class Producer:
    """Creates and resumes jobs; one per CLI invocation."""

    def __init__(self, settings: Settings, ledger: JobLedger, app: Celery, milvus_uri: str) -> None:
        self.settings = settings
        self.ledger = ledger
        self.app = app
        self.milvus_uri = milvus_uri

    def start(self, request: IngestRequest, job_id: str | None = None) -> str:
        """Create a job for ``request``, enqueue it, and return its id (``job_id`` if given,
        for a caller that shows the job while this walks, like the UI)."""
        for root in request.roots:
            scheme_of(root)  # an unknown scheme fails before any job exists
        job_id = job_id or new_job_id()
        self._write_manifest(job_id, request)
        self._create_job(job_id, request)
        self._produce(job_id, request, resume=False)
        return job_id

    def resume(self, job_id: str) -> IngestRequest:
        """Re-enqueue whatever the ledger does not show as stored or failed."""
        request = self._read_manifest(job_id)
        if not self.ledger.job_exists(job_id):
            log.warning("job %s is not in the ledger (Redis restarted?); rebuilding it", job_id)
            self.ledger.create_job(
                job_id,
                collection=request.collection,
                roots=request.roots,
                options={
                    "recursive": request.recursive,
                    "source": request.source,
                    "tags": list(request.tags),
                },
            )
        else:
            self.ledger.start_producing(job_id)
        self._produce(job_id, request, resume=True)
        return request

    def _create_job(self, job_id: str, request: IngestRequest) -> None:
        options = {"recursive": request.recursive, "source": request.source, "tags": request.tags}
        self.ledger.create_job(
            job_id, collection=request.collection, roots=request.roots, options=options
        )

    # -- the walk -------------------------------------------------------------------------------

    def _produce(self, job_id: str, request: IngestRequest, *, resume: bool) -> None:
        """Walk, skip, enqueue. On resume, everything found counts as this job's: stored
        already, failed already, or queued again, so ``queued == found`` and nothing is skipped."""
        store = self._reader(request.collection)
        accounted = (
            self.ledger.stored_paths(job_id) | self.ledger.failed_paths(job_id) if resume else set()
        )
        # Batch ids must not repeat across resumes: their crash counters live in the ledger.
        numbers = itertools.count(int(time.time() * 1000) if resume else 1)
        found = queued = skipped = 0
        batch: list[Item] = []
        sources = Sources(max_bytes=self.settings.max_source_bytes)
        listing = sources.listing(request.roots, recursive=request.recursive)
        entries = (entry for source in listing for entry in source.entries())
        for chunk in _chunks(entries, _CHUNK):
            found += len(chunk)
            pending, problems = self._examine(chunk, accounted)
            if problems:
                self.ledger.record_batch(job_id, None, stored={}, failed=problems)
            unchanged = self._unchanged(pending, store)
            if resume and store is not None:
                cache = files_cache_name(store.collection, store.instance)
                stats = {path: entry.encode() for path, entry in unchanged.items()}
                self.ledger.mark_stored(job_id, cache, stats)
            skipped += len(unchanged)
            queued += len(problems) + len(pending) - len(unchanged)
            for item in pending:
                if item.path not in unchanged:
                    batch.append(item)
                if len(batch) >= self.settings.effective_ingest_batch_size:
                    self._send(job_id, next(numbers), batch, request)
                    batch = []
            self._set_counts(job_id, resume, found, queued, skipped)
        if batch:
            self._send(job_id, next(numbers), batch, request)
        self._set_counts(job_id, resume, found, queued, skipped)
        self.ledger.done_producing(job_id)
        log.info("job %s: %d found, %d queued, %d skipped", job_id, found, queued, skipped)

    def _set_counts(self, job_id: str, resume: bool, found: int, queued: int, skipped: int) -> None:
        if resume:
            self.ledger.set_counts(job_id, found=found, queued=found, skipped=0)
        else:
            self.ledger.set_counts(job_id, found=found, queued=queued, skipped=skipped)

    def _examine(
        self, chunk: Sequence[Entry], accounted: set[str]
    ) -> tuple[list[Item], dict[str, str]]:
        """Entries to send; those that cannot be images become failures right away."""
        items: list[Item] = []
        problems: dict[str, str] = {}
        for entry in chunk:
            if entry.ref in accounted:
                continue
            if entry.problem is not None:
                problems[entry.ref] = entry.problem
                continue
            items.append(Item(entry.ref, entry.size, entry.change))
        return items, problems

    def _unchanged(self, items: Sequence[Item], store: MilvusStore | None) -> dict[str, CachedFile]:
        """Items stored as they are now, path -> what the files cache is to hold for it.

        First by the files cache of this collection instance (the stat and the content id,
        confirmed in Milvus: a cache is never trusted where Milvus disagrees), then by content
        hash. With no collection (``store`` None) nothing is stored, whatever a cache says."""
        if store is None:
            return {}
        cache = files_cache_name(store.collection, store.instance)
        cached = self.ledger.cached_files(cache, [i.path for i in items])
        claimed = {
            item.path: entry
            for item, entry in zip(items, cached, strict=True)
            # A URL served with no ETag nor Last-Modified (change "") cannot be known unchanged.
            if entry is not None
            and entry.content_id
            and item.change != ""
            and entry.stat_key == item.stat_key
        }
        present = store.existing_ids(sorted({e.content_id for e in claimed.values()}))
        unchanged = {path: e for path, e in claimed.items() if e.content_id in present}
        by_sha: dict[str, list[Item]] = {}
        for item in items:
            if item.path in unchanged or item.size < 0 or scheme_of(item.path) != "file":
                continue
            try:
                digest = hashlib.sha256(Path(item.path).read_bytes()).hexdigest()
            except OSError:
                continue  # the worker will record why
            by_sha.setdefault(digest, []).append(item)
        if not by_sha:
            return unchanged
        stored: dict[str, ImageRecord] = {r.id: r for r in store.get(list(by_sha))}
        for digest, same_content in by_sha.items():
            record = stored.get(digest)
            if record is not None:
                for item in same_content:
                    if item.path in record.all_paths:
                        unchanged[item.path] = CachedFile(item.stat_key, digest)
        return unchanged

    def _reader(self, collection: str) -> MilvusStore | None:
        """Read access to the collection for the content-hash skip; None when nothing is stored."""
        secret = self.settings.milvus_secret
        try:
            contract = stored_contract(self.milvus_uri, collection, token=secret, timeout=5.0)
            if contract is None:
                return None
            store = MilvusStore.connect(self.milvus_uri, collection, contract, token=secret)
            return store if store.count() > 0 else None
        except StoreError as exc:
            log.warning("cannot check Milvus for stored files (%s); enqueueing everything", exc)
            return None

    def _send(
        self, job_id: str, number: int, batch: Sequence[Item], request: IngestRequest
    ) -> None:
        self.ledger.record_sent(job_id, [i.path for i in batch])
        self.app.send_task(
            TASK_INGEST,
            args=[
                job_id,
                f"{number:06d}",
                [[i.path, i.size, i.change] for i in batch],
                request.collection,
                request.source,
                list(request.tags),
            ],
            queue=QUEUE,
        )

    # -- the manifest on disk -------------------------------------------------------------------

    def _manifest_path(self, job_id: str) -> Path:
        return self.settings.home / "jobs" / f"{job_id}.json"

    def _write_manifest(self, job_id: str, request: IngestRequest) -> None:
        path = self._manifest_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {"job_id": job_id, "created_at": time.time(), **asdict(request)}
        payload["roots"] = [
            str(Path(root).resolve()) if scheme_of(root) == "file" else root
            for root in request.roots
        ]
        path.write_text(json.dumps(payload, indent=2))

    def _read_manifest(self, job_id: str) -> IngestRequest:
        path = self._manifest_path(job_id)
        try:
            payload = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise UnknownJobError(
                f"no job {job_id!r}: no manifest at {path} (resume from the machine and "
                "LOOKALIKE_HOME that started it)"
            ) from exc
        return IngestRequest(
            roots=tuple(payload["roots"]),
            recursive=bool(payload["recursive"]),
            source=str(payload["source"]),
            tags=tuple(payload["tags"]),
            collection=str(payload["collection"]),
        )


def _chunks(found: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    chunk: list[Entry] = []
    for item in found:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
