"""The one use case that stores images: decode, hash, embed, match against what is stored,
merge paths and tags, upsert. Celery workers and ``lookalike add`` both call
:func:`ingest_paths`; each adds only its own bookkeeping (the job ledger, retries).

A content already stored under the same path, with nothing new to add, is not written again:
an upsert is a delete and an insert, so rewriting a stored row would let readers miss it for a
moment, and a re-delivered batch would do just that.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from typing import Protocol

from services.arrival import find_matches, with_matches
from services.arrival_index import ArrivalIndex
from services.embed import Embedder
from services.pipeline import Failure, analyze_batch
from services.records import ImageRecord
from services.sources import Sources
from services.store import VectorStore


class ContentLocks(Protocol):
    """Mutual exclusion per content id across every process that writes one collection."""

    def content_locks(
        self, collection: str, ids: Sequence[str]
    ) -> AbstractContextManager[None]: ...


class ProcessLocks:
    """:class:`ContentLocks` for one process with no shared lock service (``lookalike add``
    without Redis): one lock for the whole collection, held while a batch is merged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextmanager
    def content_locks(self, collection: str, ids: Sequence[str]) -> Iterator[None]:
        with self._lock:
            yield


class NewContents(Protocol):
    """Where a writer announces the contents it stored (the code feed that keeps every worker's
    arrival index current: :class:`services.arrival_index.CodeAnnouncer`)."""

    def stored(self, records: Sequence[ImageRecord]) -> None: ...


@dataclass(frozen=True)
class MatchPolicy:
    """When an arriving image counts as a near-duplicate of one already stored."""

    max_hamming: int
    min_cosine: float
    patches: bool = True  # and by patch codes (off-centre crops; services.patches)


@dataclass(frozen=True)
class IngestOutcome:
    """What one batch did: every decodable file's record (as stored), the failures, the paths
    that arrived with a near-duplicate stored, and those whose exact bytes were already stored
    under another path."""

    records: list[ImageRecord]
    failures: list[Failure]
    near: list[str]
    exact: list[str]
    written: int  # rows written (contents that were new, or gained a path, tag or source)


def ingest_paths(
    store: VectorStore,
    embedder: Embedder | None,
    paths: Sequence[str],
    *,
    locks: ContentLocks,
    policy: MatchPolicy,
    max_pixels: int,
    source: str = "",
    tags: Sequence[str] = (),
    sources: Sources | None = None,
    previous: Mapping[str, str] | None = None,
    index: ArrivalIndex | None = None,
    announce: NewContents | None = None,
) -> IngestOutcome:
    """Store ``paths`` (local paths or ``s3://`` URIs, read through ``sources``) in ``store``:
    safe to run twice on the same paths, and concurrently with other processes that hold the
    same ``locks``.

    ``previous``: the content id each path had when it was last stored (the files cache). A
    path whose content changed since leaves its old row, so that no path is in two rows; a row
    left with no path is deleted.

    ``index``: the stored codes to match arrivals against (a worker's), told of the new contents
    written, and of stored ones the feed never announced; without it, arrival searches Milvus.
    ``announce``: where to announce the new contents without an index (``index`` announces)."""
    outcome = analyze_batch(
        paths, embedder, max_pixels=max_pixels, source=source, tags=tags, sources=sources
    )
    records = outcome.records
    replaced = {
        r.path: previous[r.path]
        for r in records
        if previous and previous.get(r.path) and previous[r.path] != r.id
    }
    ids = [r.id for r in records] + list(replaced.values())
    if index is not None:
        index.refresh()  # a first load can take minutes: not under the short content locks
    with locks.content_locks(store.collection, ids):
        stored = {r.id: r for r in store.get([r.id for r in records])}
        # Each arrival's queries: its pHash flips and turns, then its frame codes (a bordered
        # arrival's content region, its centred windows: services.frames).
        queries = [
            [*variants, *frames]
            for variants, frames in zip(outcome.variants, outcome.frame_queries, strict=True)
        ]
        fresh, fresh_variants, exact = _split_fresh(records, queries, stored)
        matches = find_matches(
            store,
            fresh,
            fresh_variants,
            max_hamming=policy.max_hamming,
            min_cosine=policy.min_cosine,
            index=index,
            patches=policy.patches,
        )
        # The first path of each new content carries its match; a second path of the same
        # content in this batch is its own record (its path must not be lost), merged on upsert.
        matched = {id(r): m for r, m in zip(fresh, with_matches(fresh, matches), strict=True)}
        changed = [
            matched.get(id(r), r) for r in records if r.id not in stored or r.adds_to(stored[r.id])
        ]
        written = store.upsert(changed, stored=stored) if changed else 0
        if index is not None:
            # A retried batch finds its rows stored: announce those the feed never carried.
            index.stored([*fresh, *index.unannounced(list(stored.values()))])
        elif announce is not None:
            announce.stored(fresh)
        if replaced:
            emptied = _leave_old_rows(store, replaced)
            if index is not None:
                index.forget(emptied)
    near = [r.path for r, m in zip(fresh, matches, strict=True) if m is not None]
    return IngestOutcome(records, outcome.failures, near, exact, written)


def _leave_old_rows(store: VectorStore, replaced: Mapping[str, str]) -> list[str]:
    """Take each path out of the row of the content it held before; returns the ids of the
    rows deleted (left with no path)."""
    old_rows = store.get(sorted(set(replaced.values())), with_vectors=True)
    rewritten, emptied = [], []
    for row in old_rows:
        gone = {path for path, old in replaced.items() if old == row.id}
        kept = [p for p in row.all_paths if p not in gone]
        if not kept:
            emptied.append(row.id)
        elif len(kept) != len(row.all_paths):
            rewritten.append(replace(row, path=kept[0], paths=tuple(kept)))
    store.replace(rewritten)
    store.delete(emptied)
    return emptied


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
