"""A worker's index of the codes stored in one collection, kept in step with Milvus.

Built once from Milvus (one bulk read of ids and codes), then kept current through a
:class:`CodeFeed` (:mod:`services.code_feed`: a Redis stream every worker appends the codes it
upserted to, and reads before it matches a batch). The position is taken *before* the bulk read,
so a row stored meanwhile is read twice rather than missed (an id twice is harmless). A reader
whose position was trimmed from the feed rebuilds from Milvus.

Deletions come through the same feed: every lookalike writer deletes through a store that
announces the ids before it deletes them and again after (``lookalike dedup --move-to``,
``undo``, ``sync``, a path leaving its row; :class:`services.code_feed.FeedDeletions`), and the
index forgets them as it reads them, so arrival needs no read of Milvus to trust a candidate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from services.code_feed import FeedRead
from services.code_index import (
    CodeHit,
    CodeKind,
    StoredCodes,
    phash_kind,
    stored_codes,
    stored_patches,
    warm_up,
)
from services.patches import PatchCodes, patch_radius
from services.records import ImageRecord
from services.store import VectorStore

log = logging.getLogger(__name__)


class CodeFeed(Protocol):
    """Where writers of one collection announce the codes they stored."""

    def position(self) -> str: ...
    def publish(
        self,
        codes: dict[str, tuple[Sequence[str], npt.NDArray[np.uint64]]],
        patches: tuple[Sequence[str], Sequence[str]] = ((), ()),
    ) -> None: ...
    def read(self, after: str) -> FeedRead: ...


@dataclass(frozen=True)
class ArrivalCodes:
    """The codes an index holds and matches: kinds of 64-bit code, and the radius of the patch
    codes (None: not held, arrivals are not matched by them). Writers announce the kinds' codes,
    and always the patch codes (a search index may hold them where the workers do not)."""

    kinds: tuple[CodeKind, ...]
    patch_radius: int | None = None


def arrival_codes(max_hamming: int, *, patches: bool) -> ArrivalCodes:
    """What dedup on arrival matches within ``max_hamming`` (its radius): one definition, so
    that what ``lookalike add`` announces is what the workers' indexes take in."""
    return ArrivalCodes((phash_kind(max_hamming),), patch_radius(max_hamming) if patches else None)


class CodeAnnouncer:
    """Appends the codes of new contents to the feed, for every worker's index: all a writer
    needs that keeps no index of its own (``lookalike add``)."""

    def __init__(self, feed: CodeFeed, codes: ArrivalCodes) -> None:
        self._feed = feed
        self.codes = codes

    def stored(self, records: Sequence[ImageRecord]) -> None:
        """``records`` were just written as new contents."""
        if records:
            found = stored_codes(self.codes.kinds, records)
            # Always (the UI's search may hold them where arrival does not); of every record
            # ("" for none), as the first kind's ids: indexes add both under one row.
            patches = stored_patches(records)
            self._feed.publish({kind: (ids, values) for kind, ids, values in found}, patches)


class ArrivalIndex:
    """The stored ``codes`` in ``store``'s collection, for one process."""

    def __init__(self, store: VectorStore, feed: CodeFeed, codes: ArrivalCodes) -> None:
        self._store = store
        self.instance = store.instance
        self._feed = feed
        self.codes = codes
        self.kinds = codes.kinds
        self._announcer = CodeAnnouncer(feed, codes)
        self._codes = self._empty()
        self._position = ""

    def __len__(self) -> int:
        return len(self._codes)

    def rebuild(self) -> None:
        """Load every stored code from the store (the feed's position taken first)."""
        started = time.perf_counter()
        warm_up()
        position = self._feed.position()
        with_patches = self.codes.patch_radius is not None
        scan = self._store.scan_codes([kind.name for kind in self.kinds], patches=with_patches)
        codes = self._empty()
        by_kind = {kind.name: (scan.ids, scan.codes[kind.name]) for kind in self.kinds}
        codes.add_batch(by_kind, (scan.ids, scan.patches) if scan.patches is not None else ((), ()))
        self._codes, self._position = codes, position
        log.info(
            "arrival index of %s: %d rows loaded in %.1f s",
            self._store.collection,
            len(scan.ids),
            time.perf_counter() - started,
        )
        self.refresh()

    def refresh(self) -> None:
        """Take in what other writers stored since the last refresh (a rebuild if needed)."""
        if not self._position:
            self.rebuild()
            return
        read = self._feed.read(self._position)
        if read.gap:
            log.warning(
                "arrival index of %s fell behind its feed: rebuilding", self._store.collection
            )
            self.rebuild()
            return
        names = {kind.name for kind in self.kinds}
        for entry in read.entries:  # in the order written: a row deleted, then stored again
            held = {kind: found for kind, found in entry.codes.items() if kind in names}
            self._codes.add_batch(held, (entry.patch_ids, entry.patch_codes))
            self._codes.forget(entry.deleted)
        self._position = read.position

    def near(
        self, records: Sequence[ImageRecord], variants: Sequence[Sequence[bytes]]
    ) -> list[list[CodeHit]]:
        """Per record, every indexed row within its kind's radius, nearest first; then those
        whose patch codes agree with the record's, most patches first."""
        return self._codes.near(records, variants)

    def agreeing(self, codes: PatchCodes) -> list[CodeHit]:
        """The stored rows whose patch codes agree with ``codes`` on one placement, most
        patches first, as of now (the feed read first); none without patch codes."""
        self.refresh()
        return self._codes.near_patches([codes])[0]

    def stored(self, records: Sequence[ImageRecord]) -> None:
        """``records`` were just written as new contents: tell every index (this one reads them
        back from the feed at its next refresh, as the others do)."""
        self._announcer.stored(records)

    def unannounced(self, rows: Sequence[ImageRecord]) -> list[ImageRecord]:
        """Of ``rows`` (just read from the store, under their content locks), those the feed
        has never announced: written by a process whose announcement failed after its upsert
        (Redis lost in between: its retry finds the rows stored and writes nothing), or by a
        writer that announces nothing. The feed is read first, so a row another writer stored
        and announced before releasing its lock is not among them. A row with no code of any
        kind is never indexed, and is left out."""
        if not rows:
            return []
        self.refresh()
        coded = [
            r
            for r in rows
            if any(k.stored_code(r) is not None for k in self.kinds)
            or (r.patches is not None and self._codes.with_patches)
        ]
        held = self._codes.holds([r.id for r in coded])
        return [r for r, known in zip(coded, held, strict=True) if not known]

    def _empty(self) -> StoredCodes:
        return StoredCodes(self.codes.kinds, patch_radius=self.codes.patch_radius)

    def forget(self, ids: Sequence[str]) -> None:
        """Rows gone from the store (this process deleted them, or a read found them missing)."""
        if ids:
            self._codes.forget(ids)
