"""In-process indexes of stored 64-bit binary codes, for dedup on arrival without a scan.

A :class:`CodeKind` is one kind of fixed-width code a row stores (today the pHash; crop and
letterbox codes plug in the same way) with the radius an arrival matches it within and the query
codes an arrival brings (the pHash of each of its 8 flips and rotations). :class:`StoredCodes`
holds, per kind, the set of ``(row id, code)`` pairs of a collection and answers "which stored
rows are within the kind's radius of any of these query codes", exactly.

Each kind is a multi-index-hashing index (the substring plan, keys and kernels of
:mod:`services.hamming_pairs`) in three tiers, so that appending stays cheap at a million rows: a
``main`` segment, a ``delta`` segment rebuilt when the tail overflows, and a ``tail`` of the
newest codes checked by brute force; ``delta`` is merged into ``main`` once it is an eighth of
it. Ids that the store no longer holds are :meth:`StoredCodes.forget`-ten (dropped at the next
merge). Nothing here talks to Milvus or Redis: :mod:`services.arrival_index` keeps it in step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

from services.errors import QueryError
from services.hamming_pairs import (
    Substring,
    counting_sort,
    flip_masks,
    found_earlier,
    plan_substrings,
    popcount,
    substring_key,
)
from services.hashing import PHASH_BITS, phash_to_int
from services.patch_index import StoredPatches
from services.patches import PatchCodes, patch_table, stored_form, stored_table
from services.records import ImageRecord
from services.schema import NO_DISTANCE

_F = TypeVar("_F", bound=Callable[..., Any])
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
U64 = npt.NDArray[np.uint64]

CODE_BITS: Final = PHASH_BITS  # the pHash is the first kind
TAIL_ROWS: Final = 2048  # newest codes, checked by brute force, before they join ``delta``
DELTA_SHARE: Final = 8  # ``delta`` joins ``main`` once it holds a 1/8 of main's rows
DELTA_MIN_ROWS: Final = 32768
# The substring plan assumes this many queries per table build: tables outlive many batches, so
# their build cost is spread over them (the plan of hamming_pairs' cost model for a long run).
_PLAN_QUERIES: Final = 1 << 16
_ID_BYTES: Final = 64  # content ids are sha256 hex
_INT32_MAX: Final = 2**31 - 1


@dataclass(frozen=True)
class CodeKind:
    """One kind of stored code: its name (the Milvus field it is stored in), the radius within
    which an arrival matches it, the stored code of a record and the query codes of an arrival
    (``variants``: the pHashes of its flips and rotations, as ingestion computes them)."""

    name: str
    radius: int
    stored_code: Callable[[ImageRecord], int | None]
    query_codes: Callable[[ImageRecord, Sequence[bytes]], Sequence[int]]


def phash_kind(radius: int) -> CodeKind:
    """The pHash: stored once per row, queried with the 8 dihedral variants of the arrival."""
    return CodeKind(
        name="phash",
        radius=radius,
        stored_code=lambda record: phash_to_int(record.phash),
        query_codes=lambda _record, variants: [phash_to_int(v) for v in variants],
    )


@dataclass(frozen=True)
class CodeHit:
    """A stored row within a kind's radius of one of an arrival's query codes (``distance``),
    or one whose patch codes agree with the arrival's (kind :data:`PATCH_KIND`: ``shared``
    patches agree, ``distance`` is -1)."""

    id: str
    distance: int
    kind: str
    shared: int = 0


PATCH_KIND: Final = "patch_codes"


def as_codes(values: Sequence[int]) -> U64:
    """Python ints (0 <= v < 2**64) as a uint64 array."""
    return np.array(values, dtype=np.uint64).reshape(-1)


def _jit(func: _F) -> _F:
    return cast(_F, numba.njit(cache=True, nogil=True)(func))


# --- one segment: MIH tables of a fixed set of codes ------------------------------------------


@dataclass(frozen=True)
class _Segment:
    rows: I32  # row number (in the index's id table) of each code, in the order given
    codes: I64  # (S, n) the codes sorted by substring s's key
    order: I32  # (S, n) position in ``rows`` of each sorted code
    offsets: I64  # every substring's run offsets, concatenated (substring s from bases[s])
    bases: I64
    flips: I64  # every substring's flip masks, concatenated (substring s: flip_bounds[s:s+2])
    flip_bounds: I64
    shifts: I64
    widths: I64
    tolerances: I64
    raw: I64  # the codes in the order of ``rows`` (for merging)

    @property
    def size(self) -> int:
        return int(self.rows.size)


def _narrow(values: I64) -> I32:
    """Row numbers and positions as 32-bit (half the memory of a segment's tables)."""
    if values.size and int(values.max()) > _INT32_MAX:
        raise QueryError(f"an index holds at most {_INT32_MAX:,} codes")
    return values.astype(np.int32)


def _build(rows: I64, codes: I64, radius: int) -> _Segment:
    if codes.size > _INT32_MAX:
        raise QueryError(f"an index holds at most {_INT32_MAX:,} codes")
    plan: tuple[Substring, ...] = plan_substrings(codes.size, _PLAN_QUERIES, radius)
    sorted_codes, orders, offsets, flips = [], [], [], []
    for substring in plan:
        order, runs = counting_sort(codes, substring.shift, substring.width)
        sorted_codes.append(codes[order])
        orders.append(order.astype(np.int32))
        offsets.append(runs)
        flips.append(flip_masks(substring))
    return _Segment(
        rows=_narrow(rows),
        codes=np.stack(sorted_codes),
        order=np.stack(orders),
        offsets=np.concatenate(offsets),
        bases=np.cumsum([0] + [o.size for o in offsets[:-1]]).astype(np.int64),
        flips=np.concatenate(flips),
        flip_bounds=np.cumsum([0] + [f.size for f in flips]).astype(np.int64),
        shifts=np.array([s.shift for s in plan], np.int64),
        widths=np.array([s.width for s in plan], np.int64),
        tolerances=np.array([s.tolerance for s in plan], np.int64),
        raw=codes,
    )


@_jit
def _probe(
    queries: I64,
    radius: int,
    segment_codes: I64,
    order: I32,
    offsets: I64,
    bases: I64,
    flips: I64,
    flip_bounds: I64,
    shifts: I64,
    widths: I64,
    tolerances: I64,
    out_query: I64,
    out_position: I64,
    out_distance: I64,
) -> int:
    """Every (query, stored code) within ``radius``, each once; returns how many (only the first
    ``out_*.size`` are written: a caller with buffers too small calls again with larger ones)."""
    capacity = out_query.size
    found = 0
    for q in range(queries.size):
        code = queries[q]
        for s in range(shifts.size):
            key = substring_key(code, shifts[s], widths[s])
            base = bases[s]
            for f in range(flip_bounds[s], flip_bounds[s + 1]):
                bucket = base + (key ^ flips[f])
                for i in range(offsets[bucket], offsets[bucket + 1]):
                    diff = code ^ segment_codes[s, i]
                    distance = popcount(diff)
                    if distance > radius:
                        continue
                    # A code found on an earlier substring was emitted there.
                    if found_earlier(diff, shifts, widths, tolerances, s):
                        continue
                    if found < capacity:
                        out_query[found] = q
                        out_position[found] = order[s, i]
                        out_distance[found] = distance
                    found += 1
    return found


def _search_segment(segment: _Segment, queries: I64, radius: int) -> tuple[I64, I64, I64]:
    """(query index, row number, distance) of every hit of ``queries`` in ``segment``."""
    capacity = max(1024, 4 * queries.size)
    while True:
        buffers = tuple(np.empty(capacity, np.int64) for _ in range(3))
        found = _probe(
            queries,
            radius,
            segment.codes,
            segment.order,
            segment.offsets,
            segment.bases,
            segment.flips,
            segment.flip_bounds,
            segment.shifts,
            segment.widths,
            segment.tolerances,
            *buffers,
        )
        if found <= capacity:
            query, position, distance = (b[:found] for b in buffers)
            return query, segment.rows[position].astype(np.int64), distance
        capacity = found


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels now, not in the first batch that needs
    them: a worker whose collection is small uses only the brute-force tail at first."""
    codes = np.arange(4, dtype=np.int64)
    _search_segment(_build(np.arange(4, dtype=np.int64), codes, 1), codes, 1)


# --- one kind: three tiers --------------------------------------------------------------------


class CodeIndex:
    """The ``(row number, code)`` pairs of one kind, searched exactly within ``radius``."""

    def __init__(self, radius: int) -> None:
        if not 0 <= radius <= CODE_BITS:
            raise QueryError(f"radius must be 0..{CODE_BITS}, got {radius}")
        self.radius = radius
        self._main: _Segment | None = None
        self._delta: _Segment | None = None
        self._tail_rows: list[I64] = []
        self._tail_codes: list[I64] = []
        self._tail_size = 0

    def __len__(self) -> int:
        main = self._main.size if self._main else 0
        delta = self._delta.size if self._delta else 0
        return main + delta + self._tail_size

    def add(self, rows: I64, codes: U64, *, keep: Callable[[I64], npt.NDArray[np.bool_]]) -> None:
        """Add codes under their row numbers; ``keep`` says which rows survive a merge."""
        self._tail_rows.append(np.asarray(rows, np.int64))
        self._tail_codes.append(np.ascontiguousarray(codes, np.uint64).view(np.int64))
        self._tail_size += int(rows.size)
        if self._tail_size < TAIL_ROWS:
            return
        parts: list[tuple[I64 | I32, I64]] = (
            [(self._delta.rows, self._delta.raw)] if self._delta else []
        )
        self._delta = self._merged([*parts, self._take_tail()], keep)
        main = self._main.size if self._main else 0
        if self._delta.size >= max(DELTA_MIN_ROWS, main // DELTA_SHARE):
            parts = [(self._main.rows, self._main.raw)] if self._main else []
            self._main = self._merged([*parts, (self._delta.rows, self._delta.raw)], keep)
            self._delta = None

    def _take_tail(self) -> tuple[I64, I64]:
        rows, codes = np.concatenate(self._tail_rows), np.concatenate(self._tail_codes)
        self._tail_rows, self._tail_codes, self._tail_size = [], [], 0
        return rows, codes

    def _merged(
        self,
        parts: list[tuple[I64 | I32, I64]],
        keep: Callable[[I64], npt.NDArray[np.bool_]],
    ) -> _Segment:
        rows = np.concatenate([p[0].astype(np.int64) for p in parts])
        codes = np.concatenate([p[1] for p in parts])
        kept = keep(rows)
        return _build(rows[kept], codes[kept], self.radius)

    def search(self, queries: U64) -> tuple[I64, I64, I64]:
        """(query index, row number, distance) of every stored code within the radius of each
        query code (a row may come back more than once where it was added more than once)."""
        flat = np.ascontiguousarray(queries, np.uint64).view(np.int64)
        found = [_search_segment(s, flat, self.radius) for s in (self._main, self._delta) if s]
        if self._tail_size:
            rows, codes = np.concatenate(self._tail_rows), np.concatenate(self._tail_codes)
            distances = np.bitwise_count(flat[:, None] ^ codes[None, :]).astype(np.int64)
            query, column = np.nonzero(distances <= self.radius)
            found.append((query.astype(np.int64), rows[column], distances[query, column]))
        if not found:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        return (
            np.concatenate([f[0] for f in found]),
            np.concatenate([f[1] for f in found]),
            np.concatenate([f[2] for f in found]),
        )


def stored_codes(
    kinds: Sequence[CodeKind], records: Sequence[ImageRecord]
) -> list[tuple[str, list[str], U64]]:
    """Per kind, the ids of ``records`` that have a code of that kind, and those codes."""
    found = []
    for kind in kinds:
        pairs = [(r.id, kind.stored_code(r)) for r in records]
        present = [(i, c) for i, c in pairs if c is not None]
        found.append((kind.name, [i for i, _ in present], as_codes([c for _, c in present])))
    return found


def stored_patches(records: Sequence[ImageRecord]) -> tuple[list[str], list[str]]:
    """The ids of ``records`` and their patch codes in the stored form (hex; "" for none)."""
    return [r.id for r in records], [stored_form(r.patches) for r in records]


def _most_shared(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


# --- every kind of one collection ------------------------------------------------------------


class StoredCodes:
    """The stored codes of every kind of one collection, by row id (an id table shared by the
    kinds). Not thread-safe: one per worker process."""

    def __init__(self, kinds: Sequence[CodeKind], *, patch_radius: int | None = None) -> None:
        names = [kind.name for kind in kinds]
        if (not kinds and patch_radius is None) or len(set(names)) != len(names):
            raise QueryError(f"one index per code kind, got {names}")
        self.kinds = tuple(kinds)
        self._indexes = {kind.name: CodeIndex(kind.radius) for kind in kinds}
        # The patch codes (services.patch_index), when arrivals are matched by them too.
        self._patches = StoredPatches(CodeIndex(patch_radius)) if patch_radius is not None else None
        self._ids = np.empty(0, dtype=f"S{_ID_BYTES}")
        self._rows = 0
        self._forgotten: set[str] = set()
        self._dead = np.zeros(0, np.bool_)

    def __len__(self) -> int:
        return self._rows

    def add(
        self, kind: str, ids: Sequence[str], codes: U64, *, patches: Sequence[str] | None = None
    ) -> None:
        """Add rows to one kind's index: ``codes[i]`` is the code of ``ids[i]``; ``patches[i]``,
        when given, its stored patch codes ("" for none), held under the same rows."""
        if kind not in self._indexes:
            raise QueryError(f"no index of kind {kind!r} (kinds: {list(self._indexes)})")
        if codes.shape != (len(ids),):
            raise QueryError(f"{len(ids)} ids but {codes.shape} {kind} codes")
        if patches is not None and len(patches) != len(ids):
            raise QueryError(f"{len(ids)} ids but {len(patches)} patch codes")
        if ids:
            rows = self._append_ids(ids)
            self._indexes[kind].add(rows, codes, keep=self._alive)
            if patches is not None and self._patches is not None:
                self._patches.add(rows, patch_table(patches), alive=self._alive)

    @property
    def with_patches(self) -> bool:
        return self._patches is not None

    def add_patches(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Add rows' stored patch codes (``texts[i]``: the ``patch_codes`` field of ``ids[i]``;
        "" for none) under rows of their own (:meth:`add` takes them with a kind's codes, under
        the same rows); nothing when this index holds no patch codes."""
        if self._patches is None:
            return
        if len(ids) != len(texts):
            raise QueryError(f"{len(ids)} ids but {len(texts)} patch codes")
        present = [(i, t) for i, t in zip(ids, texts, strict=True) if t]
        if present:
            rows = self._append_ids([i for i, _ in present])
            self._patches.add(rows, patch_table([t for _, t in present]), alive=self._alive)

    def add_batch(
        self,
        codes: Mapping[str, tuple[Sequence[str], U64]],
        patches: tuple[Sequence[str], Sequence[str]] = ((), ()),
    ) -> None:
        """Add one batch of stored rows (a bulk load, or a feed entry): per kind, ids and codes;
        ``patches``: ids and stored patch codes, held under the rows of the first kind whose ids
        are the same (as writers announce them), else under rows of their own."""
        patch_ids, texts = patches
        pending = bool(patch_ids)
        for kind, (ids, values) in codes.items():
            aligned = pending and tuple(ids) == tuple(patch_ids)
            self.add(kind, ids, values, patches=texts if aligned else None)
            pending = pending and not aligned
        if pending:
            self.add_patches(patch_ids, texts)

    def holds(self, ids: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Per id, whether it is indexed and not forgotten (a scan of the id table: for the
        occasional check, not per arrival)."""
        if not ids:
            return np.zeros(0, np.bool_)
        wanted = np.array(list(ids), dtype=self._ids.dtype)
        alive = self._ids[: self._rows][~self._dead[: self._rows]]
        return np.isin(wanted, alive)

    def forget(self, ids: Sequence[str]) -> None:
        """Rows the store no longer holds: never returned again, dropped at the next merge."""
        if not ids:
            return
        self._forgotten.update(ids)
        dead = np.isin(self._ids[: self._rows], np.array(list(ids), dtype=self._ids.dtype))
        self._dead[: self._rows] |= dead

    def near(
        self, records: Sequence[ImageRecord], variants: Sequence[Sequence[bytes]]
    ) -> list[list[CodeHit]]:
        """For each record, every stored row within some kind's radius of one of its query
        codes: one hit per row (its smallest distance; kinds in the order given on ties),
        nearest first, then by id; then, with patch codes, the other rows whose patches agree
        with the record's (:data:`PATCH_KIND`), most patches first."""
        best: list[dict[str, CodeHit]] = [{} for _ in records]
        for kind in self.kinds:
            per_record = [kind.query_codes(r, v) for r, v in zip(records, variants, strict=True)]
            owners = np.repeat(np.arange(len(records)), [len(q) for q in per_record])
            flat = as_codes([code for codes in per_record for code in codes])
            if flat.size == 0:
                continue
            query, rows, distances = self._indexes[kind.name].search(flat)
            for q, row, distance in zip(
                query.tolist(), rows.tolist(), distances.tolist(), strict=True
            ):
                row_id = self._ids[row].decode()
                if row_id in self._forgotten:
                    continue
                hits = best[int(owners[q])]
                current = hits.get(row_id)
                if current is None or distance < current.distance:
                    hits[row_id] = CodeHit(row_id, distance, kind.name)
        nearest = [sorted(h.values(), key=lambda hit: (hit.distance, hit.id)) for h in best]
        agreeing = self.near_patches([r.patches for r in records])
        for by_code, by_patches in zip(nearest, agreeing, strict=True):
            held = {hit.id for hit in by_code}
            by_code += [hit for hit in by_patches if hit.id not in held]
        return nearest

    def near_patches(self, queries: Sequence[PatchCodes | None]) -> list[list[CodeHit]]:
        """Per query, the stored rows whose patch codes agree with it on one placement, most
        patches first (none without a patch index, or for a query of None). The queries are
        taken in their stored form, so they agree as stored rows' do."""
        found: list[dict[str, int]] = [{} for _ in queries]
        if self._patches is not None and any(q is not None for q in queries):
            table = stored_table(queries)
            matches = self._patches.near(table, alive=self._alive)
            for query, row, shared in zip(
                matches.query.tolist(), matches.row.tolist(), matches.shared.tolist(), strict=True
            ):
                row_id = self._ids[row].decode()
                if row_id not in self._forgotten:
                    found[query][row_id] = max(shared, found[query].get(row_id, 0))
        return [
            [CodeHit(i, NO_DISTANCE, PATCH_KIND, n) for i, n in sorted(f.items(), key=_most_shared)]
            for f in found
        ]

    def _append_ids(self, ids: Sequence[str]) -> I64:
        needed = self._rows + len(ids)
        if needed > self._ids.size:
            capacity = max(needed, 2 * self._ids.size, 1024)
            grown = np.empty(capacity, dtype=self._ids.dtype)
            grown[: self._rows] = self._ids[: self._rows]
            dead = np.zeros(capacity, np.bool_)
            dead[: self._rows] = self._dead[: self._rows]
            self._ids, self._dead = grown, dead
        for row_id in ids:
            if len(row_id) > _ID_BYTES or not row_id.isascii():
                raise QueryError(f"row id {row_id!r} is not a content id (at most 64 ASCII)")
        self._ids[self._rows : needed] = np.array(list(ids), dtype=self._ids.dtype)
        self._dead[self._rows : needed] = False
        self._forgotten.difference_update(ids)  # stored again
        rows = np.arange(self._rows, needed, dtype=np.int64)
        self._rows = needed
        return rows

    def _alive(self, rows: I64) -> npt.NDArray[np.bool_]:
        return np.asarray(~self._dead[rows], np.bool_)
