"""The last dedup result of a collection, kept in Redis for every process of a deployment.

The Duplicates page shows it at once instead of recomputing the dedup on render; the page's
Recompute button and ``lookalike dedup`` replace it. One Redis hash per collection::

    lookalike:dedup:{collection}:kept   hash   meta    JSON: format, collection, instance,
                                                        options, policy, computed_at, seconds,
                                                        stats, origin, run
                                               groups  the groups as compressed numpy arrays

Both fields are written by one HSET, so a reader never sees the meta of one run with the groups
of another. ``meta`` is small: a page reads it on every render to learn whether its decoded copy
is still the latest (``run``); ``groups`` is read and decoded once per run and process. A result
records the collection *instance* it was computed on (:meth:`SchemaContract.instance_of`), and
is ignored for any other, so it never outlives its collection.

The groups are columns, not objects: member ``i`` has an index into the table of distinct ids,
its path, Hamming distance, cosine and reason (an index into the table of distinct reasons);
``group_start`` says where each group begins (its keeper first). A million-row collection's
result (about 75,000 groups) is a few MB; one page of groups is made into
:class:`~services.dedup.DuplicateGroup` objects when shown, never all of them.

Decisions recorded since the run apply at once (:meth:`KeptResult.decided`): a duplicate whose
pair with its keeper is suppressed (marked not duplicates, or resolved) is left out, a group left
with no duplicate disappears, and a keeper pinned by an analyst is shown as the keeper.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import redis

from services.dedup import DedupOptions, DedupReport, DuplicateGroup, Member
from services.ledger import PREFIX, mapped_redis_errors

log = logging.getLogger(__name__)

FORMAT = 1
Origin = Literal["ui", "cli"]
PINNED_REASON = "kept: chosen by an analyst (since the run; recompute to re-anchor the group)"
FORMER_KEEPER_REASON = "the keeper when the dedup ran; distances are to it"
_KINDS: tuple[Literal["exact", "near", "burst"], ...] = ("exact", "near", "burst")

Ints = npt.NDArray[np.int64]


def kept_key(collection: str) -> str:
    return f"{PREFIX}:dedup:{collection}:kept"


@dataclass(frozen=True)
class GroupTable:
    """Duplicate groups as columns (see the module docstring)."""

    group_start: npt.NDArray[np.int64]  # len groups + 1
    group_kind: npt.NDArray[np.uint8]
    member_id: npt.NDArray[np.int32]  # into ids
    ids: npt.NDArray[np.bytes_]
    path_blob: npt.NDArray[np.uint8]  # every member's path, utf-8, one after the other
    path_end: npt.NDArray[np.int64]
    hamming: npt.NDArray[np.int16]  # -1: none
    cosine: npt.NDArray[np.float64]  # NaN: none
    member_reason: npt.NDArray[np.int32]  # into reasons
    reasons: tuple[str, ...]

    @classmethod
    def of(cls, groups: Sequence[DuplicateGroup]) -> GroupTable:
        ids: dict[str, int] = {}
        reasons: dict[str, int] = {}
        members = [m for g in groups for m in g.members]
        paths = [m.path.encode() for m in members]
        return cls(
            group_start=np.cumsum([0, *(len(g.members) for g in groups)], dtype=np.int64),
            group_kind=np.array([_KINDS.index(g.kind) for g in groups], dtype=np.uint8),
            member_id=np.array([ids.setdefault(m.id, len(ids)) for m in members], dtype=np.int32),
            ids=np.array([i.encode() for i in ids] or [b""], dtype=np.bytes_)[: len(ids)],
            path_blob=np.frombuffer(b"".join(paths), dtype=np.uint8),
            path_end=np.cumsum([len(p) for p in paths], dtype=np.int64),
            hamming=np.array([_or(m.hamming, -1) for m in members], dtype=np.int16),
            cosine=np.array([_or(m.cosine, np.nan) for m in members], dtype=np.float64),
            member_reason=np.array(
                [reasons.setdefault(m.reason, len(reasons)) for m in members], dtype=np.int32
            ),
            reasons=tuple(reasons),
        )

    def __len__(self) -> int:
        return len(self.group_kind)

    @property
    def members(self) -> int:
        return len(self.member_id)

    def group(self, number: int) -> DuplicateGroup:
        """Group ``number`` (0-based) as the dedup engine made it."""
        start, stop = int(self.group_start[number]), int(self.group_start[number + 1])
        members = [self._member(i) for i in range(start, stop)]
        return DuplicateGroup(_KINDS[int(self.group_kind[number])], members[0], members[1:])

    def _member(self, i: int) -> Member:
        begin = int(self.path_end[i - 1]) if i else 0
        hamming, cosine = int(self.hamming[i]), float(self.cosine[i])
        return Member(
            self.ids[self.member_id[i]].decode(),
            self.path_blob[begin : int(self.path_end[i])].tobytes().decode(),
            None if hamming < 0 else hamming,
            None if np.isnan(cosine) else cosine,
            self.reasons[int(self.member_reason[i])],
        )

    def encode(self) -> bytes:
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        arrays["reasons"] = np.frombuffer(json.dumps(self.reasons).encode(), dtype=np.uint8)
        out = io.BytesIO()
        np.savez_compressed(out, allow_pickle=False, **arrays)
        return out.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> GroupTable:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            arrays: dict[str, Any] = {name: stored[name] for name in _ARRAYS}
            reasons = tuple(json.loads(stored["reasons"].tobytes()))
        return cls(**arrays, reasons=reasons)


def _or(value: float | None, missing: float) -> float:
    return missing if value is None else value


_ARRAYS = (
    "group_start",
    "group_kind",
    "member_id",
    "ids",
    "path_blob",
    "path_end",
    "hamming",
    "cosine",
    "member_reason",
)


@dataclass(frozen=True)
class DecidedView:
    """The groups of a kept result still undecided: which groups show (in order), which members
    the decisions took out, and the pinned keepers."""

    table: GroupTable
    shown: Ints  # group numbers
    dropped: npt.NDArray[np.bool_]  # by member
    left: Ints  # by group: duplicates not taken out
    pinned: frozenset[str]

    def __len__(self) -> int:
        return len(self.shown)

    def groups(self, start: int = 0, stop: int | None = None) -> list[DuplicateGroup]:
        """Groups ``start:stop`` of the view, decisions applied."""
        return [self._group(int(n)) for n in self.shown[start:stop]]

    def _group(self, number: int) -> DuplicateGroup:
        group = self.table.group(number)
        first = int(self.table.group_start[number])
        duplicates = [m for i, m in enumerate(group.duplicates, first + 1) if not self.dropped[i]]
        if group.keeper.path in self.pinned:
            return DuplicateGroup(group.kind, group.keeper, duplicates)
        chosen = next((m for m in duplicates if m.path in self.pinned), None)
        if chosen is None:
            return DuplicateGroup(group.kind, group.keeper, duplicates)
        keeper = Member(chosen.id, chosen.path, 0, 1.0, PINNED_REASON)
        former = Member(
            group.keeper.id, group.keeper.path, chosen.hamming, chosen.cosine, FORMER_KEEPER_REASON
        )
        others = [m for m in duplicates if m is not chosen]
        return DuplicateGroup(group.kind, keeper, [former, *others])

    def counts(self) -> dict[str, int]:
        """groups, duplicates, exact, near and burst groups of what the view shows."""
        left = self.left[self.shown]
        kinds = self.table.group_kind[self.shown]
        return {
            "groups": len(self.shown),
            "duplicates": int(left.sum()),
            "exact_groups": int((kinds == 0).sum()),
            "near_groups": int((kinds == 1).sum()),
            "burst_groups": int((kinds == 2).sum()),
        }


@dataclass(frozen=True)
class KeptResult:
    """One dedup run: its groups, what it ran with, when, and on which collection instance."""

    collection: str
    instance: str
    options: DedupOptions
    policy: tuple[str, ...]
    computed_at: float
    seconds: float
    stats: dict[str, float | int]
    origin: Origin
    table: GroupTable
    run: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def of(
        cls,
        report: DedupReport,
        *,
        collection: str,
        instance: str,
        options: DedupOptions,
        policy: Sequence[str],
        seconds: float,
        origin: Origin,
    ) -> KeptResult:
        return cls(
            collection,
            instance,
            options,
            tuple(policy),
            time.time(),
            seconds,
            dict(report.stats),
            origin,
            GroupTable.of(report.groups),
        )

    def meta(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "collection": self.collection,
            "instance": self.instance,
            "options": asdict(self.options),
            "policy": list(self.policy),
            "computed_at": self.computed_at,
            "seconds": self.seconds,
            "stats": self.stats,
            "origin": self.origin,
            "run": self.run,
            "groups": len(self.table),
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], table: GroupTable) -> KeptResult:
        return cls(
            str(meta["collection"]),
            str(meta["instance"]),
            DedupOptions(**meta["options"]),
            tuple(meta["policy"]),
            float(meta["computed_at"]),
            float(meta["seconds"]),
            dict(meta["stats"]),
            cast(Origin, meta["origin"]),
            table,
            str(meta["run"]),
        )

    def decided(
        self, suppressed: Collection[tuple[str, str]], pinned: Collection[str]
    ) -> DecidedView:
        """This result with the decisions applied: duplicates whose pair with their keeper is
        suppressed are left out, groups left with none are hidden."""
        table = self.table
        dropped = np.zeros(table.members, dtype=np.bool_)
        if suppressed and table.members:
            dropped = _suppressed_members(table, suppressed)
        start = table.group_start
        sizes = np.diff(start) - 1
        taken = np.add.reduceat(dropped.astype(np.int64), start[:-1]) if len(sizes) else sizes
        left = (sizes - taken).astype(np.int64)
        shown = np.flatnonzero(left > 0).astype(np.int64)
        return DecidedView(table, shown, dropped, left, frozenset(pinned))


def _suppressed_members(
    table: GroupTable, suppressed: Collection[tuple[str, str]]
) -> npt.NDArray[np.bool_]:
    """By member: a duplicate whose pair with its group's keeper is suppressed. Only members
    whose id is in some suppressed pair are looked at one by one."""
    decided = np.array(sorted({i.encode() for pair in suppressed for i in pair}), dtype=np.bytes_)
    known = np.isin(table.ids, decided)
    keeper_of = np.repeat(table.group_start[:-1], np.diff(table.group_start))
    keeper_id = table.member_id[keeper_of]
    candidates = np.flatnonzero(
        known[table.member_id] & known[keeper_id] & (keeper_of != np.arange(table.members))
    )
    dropped = np.zeros(table.members, dtype=np.bool_)
    pairs = set(suppressed)
    for i in candidates.tolist():
        a = table.ids[table.member_id[i]].decode()
        b = table.ids[keeper_id[i]].decode()
        dropped[i] = ((a, b) if a < b else (b, a)) in pairs
    return dropped


class RedisKeptResults:
    """Where the last dedup result of one collection is kept (shared by every process)."""

    def __init__(self, client: redis.Redis, collection: str) -> None:
        self._redis = client
        self._collection = collection
        self._key = kept_key(collection)

    @classmethod
    def from_url(cls, url: str, collection: str) -> RedisKeptResults:
        return cls(
            redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30), collection
        )

    def save(self, result: KeptResult) -> None:
        """Keep ``result`` as the collection's last one (replacing the one before)."""
        with mapped_redis_errors("keep the dedup result"):
            self._redis.hset(
                self._key,
                mapping={"meta": json.dumps(result.meta()), "groups": result.table.encode()},
            )

    def meta(self, instance: str) -> dict[str, Any] | None:
        """The kept result's meta (small: read on every render), or None when there is none
        for this collection instance (none kept, one of an earlier collection of the same
        name, or one in a format this lookalike does not read)."""
        with mapped_redis_errors("read the kept dedup result"):
            raw = self._redis.hget(self._key, "meta")
        if raw is None:
            return None
        meta = json.loads(raw)
        if meta.get("format") != FORMAT:
            log.warning("kept dedup result of %s in format %s: ignored", self._collection, meta)
            return None
        return cast(dict[str, Any], meta) if meta.get("instance") == instance else None

    def load(self, instance: str) -> KeptResult | None:
        """The kept result of this collection instance, or None."""
        with mapped_redis_errors("read the kept dedup result"):
            meta_raw, groups = self._redis.hmget(self._key, ["meta", "groups"])
        if meta_raw is None or groups is None:
            return None
        meta = json.loads(meta_raw)
        if meta.get("format") != FORMAT or meta.get("instance") != instance:
            return None
        return KeptResult.from_meta(meta, GroupTable.decode(cast(bytes, groups)))

    def forget(self) -> None:
        with mapped_redis_errors("forget the kept dedup result"):
            self._redis.delete(self._key)
