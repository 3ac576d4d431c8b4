"""The job ledger in Redis: the source of truth for ingestion progress.

Counts are derived from sets keyed by path, so a batch delivered twice counts once::

    lookalike:job:{id}            hash   state, producing, created_at, updated_at, collection,
                                         found, queued, skipped, roots (JSON), options (JSON)
    lookalike:job:{id}:stored     set    paths whose content is in Milvus
    lookalike:job:{id}:failed     hash   path -> reason (bad images, quarantined poison)
    lookalike:job:{id}:near       set    paths that arrived with a near-duplicate already stored
    lookalike:job:{id}:exact      set    paths whose exact content was already stored elsewhere
    lookalike:job:{id}:crashes    hash   batch id -> deliveries that did not finish
    lookalike:jobs                zset   job ids by creation time
    lookalike:job:{id}:sent       set    paths enqueued (to name what a stalled job lost)
    lookalike:files:{collection}:{instance}
                                  hash   path -> "size:mtime_ns:sha256" of what is stored (cheap
                                         skip); one per collection *instance*, so a collection
                                         made anew under an old name starts with no cache
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import redis

from services.errors import LedgerUnavailableError, UnknownJobError

log = logging.getLogger(__name__)

PREFIX = "lookalike"
JobState = Literal["queued", "running", "done", "stalled"]
# Finished jobs' details are kept this long; the files cache is kept for good.
JOB_TTL_SECONDS = 30 * 24 * 3600
# Where kombu's Redis transport keeps the messages delivered to workers but not yet acknowledged
# (being worked on, or waiting out a retry's countdown).
_UNACKED = "unacked"


@dataclass(frozen=True)
class JobFailure:
    path: str
    error: str


@dataclass(frozen=True)
class JobProgress:
    """A job's counts as the ledger knows them; ``queued == ingested + failed`` when done."""

    job_id: str
    state: JobState
    collection: str
    found: int
    queued: int
    skipped: int
    ingested: int
    near_duplicates: int
    exact_duplicates: int
    failures: list[JobFailure] = field(default_factory=list)
    created_at: float = 0.0
    updated_at: float = 0.0
    roots: list[str] = field(default_factory=list)
    producing: bool = False  # the producer is still walking and enqueueing

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def finished(self) -> bool:
        return not self.producing and self.ingested + self.failed >= self.queued

    def summary(self) -> dict[str, Any]:
        """The ``--json`` summary of ``lookalike ingest``."""
        return {
            "job_id": self.job_id,
            "state": self.state,
            "queued": self.queued,
            "ingested": self.ingested,
            "skipped": self.skipped,
            "near_duplicates": self.near_duplicates,
            "exact_duplicates": self.exact_duplicates,
            "failed": [{"path": f.path, "error": f.error} for f in self.failures],
        }


def files_cache_name(collection: str, instance: str) -> str:
    """The files cache of one collection instance (``MilvusStore.instance``)."""
    return f"{PREFIX}:files:{collection}:{instance}"


@dataclass(frozen=True)
class CachedFile:
    """A path as it was when its content was stored: its stat and its content id."""

    stat_key: str  # "size:mtime_ns"
    content_id: str  # "" in entries written before content ids were kept

    @classmethod
    def parse(cls, value: str) -> CachedFile:
        size, _, rest = value.partition(":")
        mtime, _, content_id = rest.partition(":")
        return cls(f"{size}:{mtime}", content_id)

    def encode(self) -> str:
        return f"{self.stat_key}:{self.content_id}"


def _key(job_id: str, part: str = "") -> str:
    return f"{PREFIX}:job:{job_id}" + (f":{part}" if part else "")


class JobLedger:
    """Reads and writes job progress in Redis. All writes are idempotent per path."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str) -> JobLedger:
        return cls(redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30))

    def ping(self) -> None:
        with mapped_redis_errors("reach Redis"):
            self._redis.ping()

    def wait_until_reachable(self, timeout: float, *, every: float = 0.5) -> bool:
        """Block until Redis answers PING (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ping()
                return True
            except LedgerUnavailableError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(every)

    # -- producer side --------------------------------------------------------------------------

    def create_job(
        self,
        job_id: str,
        *,
        collection: str,
        roots: Sequence[str],
        options: Mapping[str, Any],
    ) -> None:
        now = time.time()
        with mapped_redis_errors("create a job"):
            pipe = self._redis.pipeline()
            pipe.hset(
                _key(job_id),
                mapping={
                    "state": "queued",
                    "producing": 1,
                    "collection": collection,
                    "created_at": now,
                    "updated_at": now,
                    "found": 0,
                    "queued": 0,
                    "skipped": 0,
                    "roots": json.dumps(list(roots)),
                    "options": json.dumps(dict(options)),
                },
            )
            pipe.zadd(f"{PREFIX}:jobs", {job_id: now})
            pipe.execute()

    def job_exists(self, job_id: str) -> bool:
        with mapped_redis_errors("read a job"):
            return bool(self._redis.exists(_key(job_id)))

    def add_counts(self, job_id: str, *, found: int = 0, queued: int = 0, skipped: int = 0) -> None:
        with mapped_redis_errors("update job counts"):
            pipe = self._redis.pipeline()
            for name, value in (("found", found), ("queued", queued), ("skipped", skipped)):
                if value:
                    pipe.hincrby(_key(job_id), name, value)
            pipe.hset(_key(job_id), "updated_at", time.time())
            pipe.execute()

    def set_counts(self, job_id: str, *, found: int, queued: int, skipped: int) -> None:
        with mapped_redis_errors("update job counts"):
            self._redis.hset(
                _key(job_id),
                mapping={
                    "found": found,
                    "queued": queued,
                    "skipped": skipped,
                    "updated_at": time.time(),
                },
            )

    def start_producing(self, job_id: str) -> None:
        """A producer (re)starts enqueueing: the job cannot end before it is done."""
        with mapped_redis_errors("update a job"):
            self._redis.hset(
                _key(job_id), mapping={"producing": 1, "state": "queued", "updated_at": time.time()}
            )

    def mark_stored(self, job_id: str, files_cache: str, stored: Mapping[str, str]) -> None:
        """Paths the producer found already stored (on resume): counted as this job's."""
        if stored:
            self.record_batch(job_id, files_cache, stored=stored, failed={})

    def done_producing(self, job_id: str) -> JobProgress:
        """The producer has enqueued everything; the job ends when the workers catch up."""
        with mapped_redis_errors("update a job"):
            self._redis.hset(
                _key(job_id),
                mapping={"producing": 0, "state": "running", "updated_at": time.time()},
            )
        progress = self.progress(job_id, with_failures=False)
        if progress.finished:
            self.finish(job_id)
        return progress

    def set_state(self, job_id: str, state: JobState) -> None:
        with mapped_redis_errors("update a job's state"):
            self._redis.hset(_key(job_id), mapping={"state": state, "updated_at": time.time()})

    def stored_paths(self, job_id: str) -> set[str]:
        with mapped_redis_errors("read stored paths"):
            return {_text(p) for p in self._redis.smembers(_key(job_id, "stored"))}

    def failed_paths(self, job_id: str) -> set[str]:
        with mapped_redis_errors("read failed paths"):
            return {_text(p) for p in self._redis.hkeys(_key(job_id, "failed"))}

    def cached_files(self, files_cache: str, paths: Sequence[str]) -> list[CachedFile | None]:
        """What the files cache ``files_cache`` holds for each path, None where unknown."""
        if not paths:
            return []
        with mapped_redis_errors("read the files cache"):
            values = self._redis.hmget(files_cache, list(paths))
        return [None if v is None else CachedFile.parse(_text(v)) for v in values]

    def forget_files(self, files_cache: str, paths: Sequence[str]) -> None:
        """Drop ``paths`` from a files cache (they left the collection)."""
        if paths:
            with mapped_redis_errors("update the files cache"):
                self._redis.hdel(files_cache, *paths)

    def record_sent(self, job_id: str, paths: Sequence[str]) -> None:
        """Paths the producer has enqueued for ``job_id``."""
        if paths:
            with mapped_redis_errors("record enqueued paths"):
                self._redis.sadd(_key(job_id, "sent"), *paths)

    def unaccounted(self, job_id: str) -> list[str]:
        """Enqueued paths that are neither stored nor failed."""
        with mapped_redis_errors("read a job's paths"):
            pipe = self._redis.pipeline()
            pipe.smembers(_key(job_id, "sent"))
            pipe.smembers(_key(job_id, "stored"))
            pipe.hkeys(_key(job_id, "failed"))
            sent, stored, failed = pipe.execute()
        done = {_text(p) for p in stored} | {_text(p) for p in failed}
        return sorted(p for p in (_text(p) for p in sent) if p not in done)

    # -- worker side ----------------------------------------------------------------------------

    def record_batch(
        self,
        job_id: str,
        files_cache: str | None,
        *,
        stored: Mapping[str, str],
        failed: Mapping[str, str],
        near: Iterable[str] = (),
        exact: Iterable[str] = (),
    ) -> None:
        """Record one batch's outcome; ``stored`` maps path -> "size:mtime_ns:sha256", written to
        the files cache ``files_cache`` too (None: no cache to keep)."""
        with mapped_redis_errors("record a batch"):
            pipe = self._redis.pipeline()
            if stored:
                pipe.sadd(_key(job_id, "stored"), *stored)
                if files_cache is not None:
                    pipe.hset(files_cache, mapping=_strings(stored))
            if failed:
                pipe.hset(_key(job_id, "failed"), mapping=_strings(failed))
            near, exact = list(near), list(exact)
            if near:
                pipe.sadd(_key(job_id, "near"), *near)
            if exact:
                pipe.sadd(_key(job_id, "exact"), *exact)
            # Touch the job only if it exists: after Redis lost it, a late batch must not create a
            # ghost job; its paths stay recorded for `--resume`, which rebuilds the job.
            pipe.eval(_TOUCH, 1, _key(job_id), time.time())
            *_, job_exists = pipe.execute()
        if not job_exists:
            log.warning("job %s is not in the ledger (Redis restarted?); resume it", job_id)
            return
        progress = self.progress(job_id, with_failures=False)
        if progress.finished and progress.queued > 0:  # (its state already reads "done")
            self.finish(job_id)

    def finish(self, job_id: str) -> None:
        with mapped_redis_errors("finish a job"):
            pipe = self._redis.pipeline()
            pipe.hset(_key(job_id), mapping={"state": "done", "updated_at": time.time()})
            for part in ("", "stored", "failed", "near", "exact", "crashes", "sent"):
                pipe.expire(_key(job_id, part), JOB_TTL_SECONDS)
            pipe.execute()

    def start_delivery(self, job_id: str, batch_id: str) -> int:
        """Count a delivery of ``batch_id`` that has not finished; returns how many there are."""
        with mapped_redis_errors("count a delivery"):
            return int(self._redis.hincrby(_key(job_id, "crashes"), batch_id, 1))

    def end_delivery(self, job_id: str, batch_id: str) -> None:
        """The delivery finished (or will be retried on purpose): it did not crash the worker."""
        with mapped_redis_errors("count a delivery"):
            self._redis.hdel(_key(job_id, "crashes"), batch_id)

    @contextmanager
    def content_locks(
        self, collection: str, ids: Sequence[str], *, timeout: float = 60.0, ttl: float = 30.0
    ) -> Iterator[None]:
        """Hold a lock on each content id: rows are read, merged and written back, so two
        workers storing the same content (two paths) must not interleave, or a path is lost.

        A lock lives ``ttl`` seconds at most, so one left by a killed worker soon expires."""
        keys = [f"{PREFIX}:lock:{collection}:{i}" for i in sorted(set(ids))]
        with self._locked(keys, timeout=timeout, ttl=ttl, what=f"{len(keys)} contents"):
            yield

    @contextmanager
    def collection_lock(self, collection: str, *, timeout: float = 120.0) -> Iterator[None]:
        """Hold the lock under which a worker opens (and, the first time, creates) a
        collection, so that no two processes create it at once."""
        keys = [f"{PREFIX}:lock:create:{collection}"]
        with self._locked(keys, timeout=timeout, ttl=timeout, what=f"collection {collection}"):
            yield

    @contextmanager
    def _locked(
        self, keys: Sequence[str], *, timeout: float, ttl: float, what: str
    ) -> Iterator[None]:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + timeout
        while True:
            with mapped_redis_errors("take locks"):
                pipe = self._redis.pipeline()
                for key in keys:
                    pipe.set(key, token, nx=True, px=int(ttl * 1000))
                taken = [key for key, ok in zip(keys, pipe.execute(), strict=True) if ok]
            if len(taken) == len(keys):
                break
            self._release(taken, token)
            if time.monotonic() > deadline:
                raise LedgerUnavailableError(
                    f"could not lock {what} in {timeout:.0f}s (another worker holds the lock); "
                    "retrying later"
                )
            time.sleep(random.uniform(0.01, 0.05))
        try:
            yield
        finally:
            self._release(keys, token)

    def _release(self, keys: Sequence[str], token: str) -> None:
        if not keys:
            return
        with mapped_redis_errors("release content locks"):
            # Only our own locks: one that expired and was taken by another worker stays.
            self._redis.eval(_RELEASE, len(keys), *keys, token)

    # -- readers --------------------------------------------------------------------------------

    def progress(self, job_id: str, *, with_failures: bool = True) -> JobProgress:
        with mapped_redis_errors("read a job"):
            pipe = self._redis.pipeline()
            pipe.hgetall(_key(job_id))
            pipe.scard(_key(job_id, "stored"))
            pipe.scard(_key(job_id, "near"))
            pipe.scard(_key(job_id, "exact"))
            pipe.hgetall(_key(job_id, "failed"))
            job, stored, near, exact, failed = pipe.execute()
        if not job:
            raise UnknownJobError(f"no job {job_id!r} in the ledger at this Redis")
        fields = {_text(k): _text(v) for k, v in job.items()}
        failures = sorted(
            (JobFailure(_text(p), _text(r)) for p, r in failed.items()), key=lambda f: f.path
        )
        progress = JobProgress(
            job_id=job_id,
            state=fields.get("state", "queued"),  # type: ignore[arg-type]
            collection=fields.get("collection", ""),
            found=int(fields.get("found", 0)),
            queued=int(fields.get("queued", 0)),
            skipped=int(fields.get("skipped", 0)),
            ingested=int(stored),
            near_duplicates=int(near),
            exact_duplicates=int(exact),
            failures=failures if with_failures else [JobFailure("", "")] * len(failed),
            created_at=float(fields.get("created_at", 0)),
            updated_at=float(fields.get("updated_at", 0)),
            roots=json.loads(fields.get("roots", "[]")),
            producing=fields.get("producing", "0") == "1",
        )
        # Every file is accounted for, but the worker that recorded the last batch has not yet
        # marked the job done (record() does it right after): it is done, say so.
        if progress.state in ("queued", "running") and progress.finished and progress.queued > 0:
            progress = replace(progress, state="done")
        return progress

    def check_stalled(self, progress: JobProgress, queue: str, *, quiet_for: float) -> bool:
        """Mark the job stalled, and say so, when it can no longer finish by itself: it has not
        moved for ``quiet_for`` seconds, the producer is done, and no message is queued or held
        by a worker. Its unaccounted files are then :meth:`unaccounted`; ``--resume`` re-sends
        them."""
        if progress.finished or progress.producing or progress.state == "done":
            return False
        if progress.state == "stalled":
            return True
        if time.time() - progress.updated_at < quiet_for:
            return False
        with mapped_redis_errors("read the queue"):
            pipe = self._redis.pipeline()
            pipe.llen(queue)
            pipe.hlen(_UNACKED)
            depth, held = pipe.execute()
        if depth or held:
            return False
        self.set_state(progress.job_id, "stalled")
        log.warning("job %s stalled: nothing queued or running, not finished", progress.job_id)
        return True

    def recent_jobs(self, limit: int = 10) -> list[str]:
        with mapped_redis_errors("list jobs"):
            return [_text(j) for j in self._redis.zrevrange(f"{PREFIX}:jobs", 0, limit - 1)]

    def queue_depth(self, queue: str) -> int:
        with mapped_redis_errors("read the queue depth"):
            return int(self._redis.llen(queue))


_Field = bytes | bytearray | memoryview | str | int | float


def _strings(values: Mapping[str, str]) -> dict[_Field, _Field]:
    """``values`` typed as redis-py's hset mapping wants it (its key type is invariant)."""
    return dict(values.items())


_TOUCH = """
if redis.call('exists', KEYS[1]) == 1 then
  redis.call('hset', KEYS[1], 'updated_at', ARGV[1])
  return 1
end
return 0
"""
_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then redis.call('del', key) end
end
return 0
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextmanager
def mapped_redis_errors(action: str) -> Iterator[None]:
    """Map redis-py connection failures to :class:`LedgerUnavailableError`."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise LedgerUnavailableError(
            f"Redis is unreachable while trying to {action}: {exc}. "
            "Start it or check LOOKALIKE_REDIS_URL"
        ) from exc
