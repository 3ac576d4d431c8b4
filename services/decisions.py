"""Analysts' dedup decisions, kept in Redis beside the job ledger.

A group marked "not duplicates" suppresses every pair among its members; a resolved group (its
duplicates moved or deleted) suppresses the pairs between its keeper and each duplicate. The
dedup engine leaves suppressed pairs out, so decided groups do not come back. An undo of a
move (``lookalike undo``) takes "resolved" back for the pairs it restored. Each keeper's history
says which contents and paths were merged into it, when, and where they went::

    lookalike:decisions:{collection}:pairs             set    "id_a|id_b" (a < b)
    lookalike:decisions:{collection}:log               list   JSON {kind, keeper, members, at}
    lookalike:decisions:{collection}:history:{keeper}  list   JSON {event, id, path, target,
                                                              manifest, gained, at}
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import redis

from services.ledger import PREFIX, mapped_redis_errors


class RedisDecisions:
    """:class:`services.dedup.Decisions` in Redis, for one collection."""

    def __init__(self, client: redis.Redis, collection: str) -> None:
        self._redis = client
        self._pairs = f"{PREFIX}:decisions:{collection}:pairs"
        self._log = f"{PREFIX}:decisions:{collection}:log"
        self._keepers = f"{PREFIX}:decisions:{collection}:keepers"
        self._history = f"{PREFIX}:decisions:{collection}:history"

    @classmethod
    def from_url(cls, url: str, collection: str) -> RedisDecisions:
        return cls(
            redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30), collection
        )

    def suppressed_pairs(self) -> set[tuple[str, str]]:
        with mapped_redis_errors("read dedup decisions"):
            members = self._redis.smembers(self._pairs)
        pairs = set()
        for member in members:
            text = member.decode() if isinstance(member, bytes) else str(member)
            left, _, right = text.partition("|")
            pairs.add((left, right))
        return pairs

    def record(
        self, kind: Literal["not_duplicates", "resolved"], keeper: str, members: Sequence[str]
    ) -> None:
        if kind == "not_duplicates":
            pairs = list(itertools.combinations(sorted({keeper, *members}), 2))
        else:
            pairs = [(min(keeper, m), max(keeper, m)) for m in members if m != keeper]
        encoded = [f"{a}|{b}" for a, b in pairs]
        entry = json.dumps(
            {"kind": kind, "keeper": keeper, "members": list(members), "at": time.time()}
        )
        with mapped_redis_errors("record a dedup decision"):
            pipe = self._redis.pipeline()
            if encoded:
                pipe.sadd(self._pairs, *encoded)
            pipe.rpush(self._log, entry)
            pipe.execute()

    def version(self) -> int:
        """How many decisions were ever recorded (the log's length): it changes with every
        decision, so a view with decisions applied is current while this stays the same."""
        with mapped_redis_errors("read the dedup decisions log"):
            return int(self._redis.llen(self._log))

    def pinned_keepers(self) -> set[str]:
        """Paths an analyst chose as their group's keeper."""
        with mapped_redis_errors("read pinned keepers"):
            members = self._redis.smembers(self._keepers)
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}

    def pin_keeper(self, keeper_path: str, group_paths: Sequence[str]) -> None:
        """Make ``keeper_path`` its group's keeper from now on (the group's other pins go)."""
        others = [p for p in group_paths if p != keeper_path]
        entry = json.dumps({"kind": "keeper", "keeper": keeper_path, "at": time.time()})
        with mapped_redis_errors("pin a keeper"):
            pipe = self._redis.pipeline()
            if others:
                pipe.srem(self._keepers, *others)
            pipe.sadd(self._keepers, keeper_path)
            pipe.rpush(self._log, entry)
            pipe.execute()

    def reopen(self, keeper: str, members: Sequence[str]) -> None:
        """Take back "resolved" for the pairs of ``keeper`` and each of ``members``."""
        encoded = [f"{min(keeper, m)}|{max(keeper, m)}" for m in members if m != keeper]
        entry = json.dumps(
            {"kind": "reopened", "keeper": keeper, "members": list(members), "at": time.time()}
        )
        with mapped_redis_errors("reopen a resolved dedup group"):
            pipe = self._redis.pipeline()
            if encoded:
                pipe.srem(self._pairs, *encoded)
            pipe.rpush(self._log, entry)
            pipe.execute()

    def record_history(self, keeper: str, events: Sequence[Mapping[str, object]]) -> None:
        """Append ``events`` (JSON objects) to the history of ``keeper``."""
        if not events:
            return
        with mapped_redis_errors("record a keeper's history"):
            self._redis.rpush(f"{self._history}:{keeper}", *(json.dumps(e) for e in events))

    def history(self, keeper: str) -> list[dict[str, Any]]:
        """Everything merged into ``keeper`` (and restored from it), oldest first."""
        with mapped_redis_errors("read a keeper's history"):
            raw = self._redis.lrange(f"{self._history}:{keeper}", 0, -1)
        return [json.loads(item) for item in raw]
