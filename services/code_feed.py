"""The codes each worker stores, told to the others: one Redis stream per collection instance.

::

    lookalike:codes:{collection}:{instance}
        stream   one entry per upserted batch: for each code kind K, ``K:ids`` (the new rows'
                 ids, newline-separated) and ``K:codes`` (their codes, uint64 little-endian);
                 one entry per deletion, before it and again after it: ``deleted`` (the ids,
                 newline-separated); and ``patch_codes:ids``, ``patch_codes:sizes`` (uint16
                 little-endian: each row's byte count) and ``patch_codes:bytes`` (the rows'
                 stored patch codes, services.patches, as bytes, one after the other); trimmed
                 to about MAX_ENTRIES entries

A worker reads the entries after its position before it matches a batch, so rows another worker
stored are in its index. A position is the last entry id read and the stream's count of entries
ever added (``XINFO STREAM``'s ``entries-added``); fewer entries read than were added since means
some were trimmed unread (a worker idle while others stored MAX_ENTRIES batches) or the stream was
lost with Redis: that worker rebuilds its index from Milvus.

Every lookalike writer that deletes rows (dedup's moves and deletions, undo, sync and watch, a
path leaving its row) does so through a store holding :class:`FeedDeletions`, so no index needs
to confirm its candidates in Milvus (on Milvus Lite a read of stored ids costs 150-250 ms at
1,000,000 rows).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import redis

from services.errors import LedgerUnavailableError
from services.ledger import PREFIX, mapped_redis_errors

log = logging.getLogger(__name__)

# Batches: ~50 bytes a row per 64-bit kind, ~300 with the patch codes (so at most about 100 MB
# with the patch codes, at 128 rows a batch).
MAX_ENTRIES: Final = 2500
START_ID: Final = "0-0"
DELETED: Final = "deleted"
PATCHES: Final = "patch_codes"


def feed_key(collection: str, instance: str) -> str:
    return f"{PREFIX}:codes:{collection}:{instance}"


@dataclass(frozen=True)
class FeedEntry:
    """One published batch: per code kind, the ids and codes of the rows it stored."""

    codes: dict[str, tuple[list[str], npt.NDArray[np.uint64]]]
    deleted: tuple[str, ...] = ()  # rows deleted (or being deleted): forget them
    patch_ids: tuple[str, ...] = ()  # rows stored with patch codes, and those codes (hex)
    patch_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeedRead:
    """Entries after a position, the position after them, and whether entries after the old
    position were trimmed away unread (then the reader must rebuild from the store)."""

    entries: list[FeedEntry]
    position: str
    gap: bool


class RedisCodeFeed:
    """:class:`services.arrival_index.CodeFeed` on a Redis stream."""

    def __init__(self, client: redis.Redis, collection: str, instance: str) -> None:
        self._redis = client
        self.key = feed_key(collection, instance)

    @classmethod
    def from_url(cls, url: str, collection: str, instance: str) -> RedisCodeFeed:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
        return cls(client, collection, instance)

    def position(self) -> str:
        """Where the feed is now (opaque): read from here on."""
        with mapped_redis_errors("read the code feed's position"):
            last, added = self._state(self._redis)
        return f"{last}@{added}"

    def publish(
        self,
        codes: dict[str, tuple[Sequence[str], npt.NDArray[np.uint64]]],
        patches: tuple[Sequence[str], Sequence[str]] = ((), ()),
    ) -> None:
        """One entry: per kind, the ids and codes of new rows; ``patches``: the ids and stored
        patch codes (hex, services.patches) of those that have them."""
        fields: dict[str, bytes] = {}
        for kind, (ids, values) in codes.items():
            if ids:
                fields[f"{kind}:ids"] = "\n".join(ids).encode()
                fields[f"{kind}:codes"] = np.asarray(values, "<u8").tobytes()
        patch_ids, patch_codes = patches
        if any(patch_codes):
            raw = [bytes.fromhex(text) for text in patch_codes]
            fields[f"{PATCHES}:ids"] = "\n".join(patch_ids).encode()
            fields[f"{PATCHES}:sizes"] = np.array([len(r) for r in raw], "<u2").tobytes()
            fields[f"{PATCHES}:bytes"] = b"".join(raw)
        if fields:
            with mapped_redis_errors("publish stored codes"):
                self._redis.xadd(self.key, fields, maxlen=MAX_ENTRIES, approximate=True)  # type: ignore[arg-type]

    def publish_deleted(self, ids: Sequence[str]) -> None:
        if ids:
            with mapped_redis_errors("tell the workers of deleted rows"):
                self._redis.xadd(
                    self.key,
                    {DELETED: "\n".join(ids).encode()},
                    maxlen=MAX_ENTRIES,
                    approximate=True,
                )

    def read(self, after: str) -> FeedRead:
        """The entries published after ``after``, in one transaction with the stream's count of
        entries ever added: fewer read than were added means some were trimmed (a gap)."""
        last, _, seen = after.partition("@")
        with mapped_redis_errors("read the code feed"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.xrange(self.key, min=f"({last}", max="+")
            pipe.xinfo_stream(self.key)
            replies: Any = pipe.execute(raise_on_error=False)
        batch: list[Any] = replies[0]
        if isinstance(replies[1], redis.ResponseError):  # no stream: nothing ever published
            newest, added = START_ID, 0
        else:
            newest, added = _text(replies[1]["last-generated-id"]), int(replies[1]["entries-added"])
        entries = [_entry(fields) for _, fields in batch]
        position = _text(batch[-1][0]) if batch else last
        gap = added - int(seen or 0) != len(entries)
        return FeedRead(entries, f"{max(position, newest, key=_stream_id)}@{added}", gap)

    def _state(self, client: redis.Redis) -> tuple[str, int]:
        try:
            info: Any = client.xinfo_stream(self.key)
        except redis.ResponseError:  # no stream: nothing was ever published
            return START_ID, 0
        return _text(info["last-generated-id"]), int(info["entries-added"])


class FeedDeletions:
    """:class:`services.store.DeletionNotices` on the code feeds of one Redis: a store holding
    it announces each deletion in its collection instance's feed, before and after."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str) -> FeedDeletions:
        return cls(redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30))

    def deleting(self, collection: str, instance: str, ids: Sequence[str]) -> None:
        """Raises LedgerUnavailableError when Redis cannot be told (then delete nothing)."""
        RedisCodeFeed(self._redis, collection, instance).publish_deleted(ids)

    def deleted(self, collection: str, instance: str, ids: Sequence[str]) -> None:
        try:
            RedisCodeFeed(self._redis, collection, instance).publish_deleted(ids)
        except LedgerUnavailableError as exc:  # told before; only a racing index load misses it
            log.warning("deleted %d rows of %s, unannounced after: %s", len(ids), collection, exc)


def _entry(fields: dict[bytes, bytes]) -> FeedEntry:
    codes: dict[str, tuple[list[str], npt.NDArray[np.uint64]]] = {}
    deleted: tuple[str, ...] = ()
    patch_ids: tuple[str, ...] = ()
    patch_codes: tuple[str, ...] = ()
    for name, value in fields.items():
        kind, _, part = _text(name).rpartition(":")
        if kind == PATCHES:
            if part == "ids":
                patch_ids = tuple(_text(value).split("\n"))
                sizes = np.frombuffer(fields[f"{PATCHES}:sizes".encode()], "<u2")
                raw = fields[f"{PATCHES}:bytes".encode()]
                ends = np.cumsum(sizes).tolist()
                patch_codes = tuple(
                    raw[start:end].hex() for start, end in zip([0, *ends[:-1]], ends, strict=True)
                )
        elif part == "ids":
            ids = _text(value).split("\n")
            raw = fields[f"{kind}:codes".encode()]
            codes[kind] = (ids, np.frombuffer(raw, "<u8").astype(np.uint64))
        elif part == DELETED:
            deleted = tuple(_text(value).split("\n"))
    return FeedEntry(codes, deleted, patch_ids, patch_codes)


def _stream_id(value: str) -> tuple[int, int]:
    millis, _, sequence = value.partition("-")
    return int(millis), int(sequence or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
