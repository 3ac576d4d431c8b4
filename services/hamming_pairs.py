"""All pairs of 64-bit perceptual hashes within a Hamming radius, for collection-scale dedup.

Multi-index hashing (Norouzi, Punjani & Fleet, "Fast search in Hamming space with multi-index
hashing", CVPR 2012): ``m`` disjoint ``w``-bit substrings of the code are each an index key. By the
pigeonhole principle a pair within radius ``r = q*m + a`` (``0 <= a < m``) is within ``q`` on one
of the first ``a + 1`` substrings or within ``q - 1`` on one of the others, so each substring's
table is probed at every key within that tolerance of the query's key and the candidates are
verified with a popcount. The number and width of the substrings come from a small cost model of
``N`` and ``r``; a 0-bit "substring" is plain brute force, which is what tiny inputs get.

Codes are processed key block by key block (all queries sharing a key against one neighbouring
bucket), which keeps the inner loop in L1 and lets it vectorise; a pair found on one substring is
dropped when an earlier substring would have found it too, so each pair is emitted once per query
variant without a hash set. Work runs in numba (``prange`` over slices of the sorted queries);
memory is O(N + pairs): one table per substring and variant queries in chunks of ``chunk`` items.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt
from numba import prange
from numba.core import types as nbtypes
from numba.extending import intrinsic

from services.errors import QueryError
from services.hashing import PHASH_BITS, PHASH_BYTES

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
U64 = npt.NDArray[np.uint64]
_Int = int | np.int64

_MAX_KEY_BITS: Final = 22  # a table of 2**22 + 1 offsets is 32 MiB
_MAX_RADIUS: Final = PHASH_BITS
_MAX_CODES: Final = 2**31 - 1  # positions in a table are 32-bit
# Relative cost of probing one bucket against verifying one candidate (a random access into the
# offsets table against a streamed popcount); measured on Zen 4, the choice is not sensitive to it.
_PROBE_COST: Final = 8.0
_PARTS_PER_THREAD: Final = 32
_DEFAULT_CHUNK: Final = 1 << 18

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(func: _F) -> _F:
    return cast(_F, numba.njit(cache=True, nogil=True)(func))


def _parallel_jit(func: _F) -> _F:
    return cast(_F, numba.njit(cache=True, nogil=True, parallel=True)(func))


@dataclass(frozen=True)
class PairSet:
    """Unordered pairs ``left < right`` (indices into the codes), sorted by ``(left, right)``.

    ``distance`` is the smallest Hamming distance over identity and every variant in either
    direction; ``variant`` says which code reached it: 0 the identity codes, ``k`` column ``k - 1``
    of ``variants``, of the right item (against the left's identity) where ``variant_of_right``.
    Ties go to the identity, then the lower variant, then the left item's variant.
    """

    left: I64
    right: I64
    distance: npt.NDArray[np.uint8]
    variant: npt.NDArray[np.int8]
    variant_of_right: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.left.size)


class Substring(NamedTuple):
    shift: int  # the key is (code >> shift) & (2**width - 1)
    width: int
    tolerance: int  # probe every key within this many bits of the query's


def codes_from_bytes(hashes: Sequence[bytes]) -> U64:
    """8-byte big-endian pHashes as uint64 codes; each equals ``services.hashing.phash_to_int``."""
    for position, value in enumerate(hashes):
        if len(value) != PHASH_BYTES:
            raise QueryError(f"pHash {position} is {len(value)} bytes, expected {PHASH_BYTES}")
    return np.frombuffer(b"".join(hashes), dtype=">u8").astype(np.uint64)


def pairs_within(
    codes: U64,
    radius: int,
    *,
    variants: U64 | None = None,
    chunk: int = _DEFAULT_CHUNK,
) -> PairSet:
    """Every unordered pair ``i < j`` whose distance is at most ``radius``, each once.

    ``codes`` is ``(N,)`` uint64; ``variants`` optionally ``(N, K)`` uint64, the codes of each
    item's transformed images (identity excluded). A pair's distance is the minimum of
    ``hamming(codes[i], codes[j])`` and ``hamming(variants[i, k], codes[j])`` for every ``k``, in
    both directions. Variant queries are processed ``chunk`` items at a time.
    """
    identity = _check_codes(codes, radius, chunk)
    variant_codes = _check_variants(variants, identity.size)
    count = identity.size
    if count < 2:
        return _empty()
    queries_per_pass = (
        count if variant_codes is None else min(count, chunk) * variant_codes.shape[1]
    )
    plan = plan_substrings(count, queries_per_pass, radius)
    tables = [_sort_by_key(identity, substring) for substring in plan]
    hits = [_join(identity, None, 0, tables, plan, radius, self_join=True)]
    if variant_codes is not None:
        for start in range(0, count, chunk):
            block = variant_codes[start : start + chunk]
            queries = np.ascontiguousarray(block).reshape(-1).view(np.int64)
            hits.append(
                _join(queries, block.shape[1], start, tables, plan, radius, self_join=False)
            )
    return _closest_per_pair(hits, count)


def _check_codes(codes: U64, radius: int, chunk: int) -> I64:
    array = np.asarray(codes)
    if array.ndim != 1 or array.dtype != np.uint64:
        raise QueryError(f"codes must be a 1-D uint64 array, got {array.dtype} {array.shape}")
    if not 0 <= radius <= _MAX_RADIUS:
        raise QueryError(f"radius must be 0..{_MAX_RADIUS}, got {radius}")
    if chunk < 1:
        raise QueryError(f"chunk must be positive, got {chunk}")
    return np.ascontiguousarray(array).view(np.int64)


def _check_variants(variants: U64 | None, count: int) -> I64 | None:
    if variants is None:
        return None
    array = np.asarray(variants)
    if array.ndim != 2 or array.dtype != np.uint64 or array.shape[0] != count:
        raise QueryError(
            f"variants must be a ({count}, K) uint64 array, got {array.dtype} {array.shape}"
        )
    if array.shape[1] > np.iinfo(np.int8).max:
        raise QueryError(f"at most 127 variants per code, got {array.shape[1]}")
    return None if array.shape[1] == 0 else array.view(np.int64)


def _empty() -> PairSet:
    return PairSet(
        left=np.zeros(0, np.int64),
        right=np.zeros(0, np.int64),
        distance=np.zeros(0, np.uint8),
        variant=np.zeros(0, np.int8),
        variant_of_right=np.zeros(0, np.bool_),
    )


# --- planning ---------------------------------------------------------------------------------


def _tolerances(substrings: int, radius: int) -> list[int]:
    """Refined pigeonhole: r = q*m + a puts q on the first a+1 substrings, q-1 on the rest."""
    quotient, remainder = divmod(radius, substrings)
    tolerances = [quotient] * (remainder + 1) + [quotient - 1] * (substrings - remainder - 1)
    return [t for t in tolerances if t >= 0]


def _neighbours(width: int, tolerance: int) -> int:
    return sum(math.comb(width, flips) for flips in range(min(width, tolerance) + 1))


def plan_substrings(index_size: int, queries: int, radius: int) -> tuple[Substring, ...]:
    """The substrings minimising probes plus candidates per query (keys of 0 to 22 bits)."""
    best: tuple[float, tuple[Substring, ...]] | None = None
    for width in range(_MAX_KEY_BITS + 1):
        for substrings in range(1, (PHASH_BITS // width if width else 1) + 1):
            tolerances = _tolerances(substrings, radius)
            keys = 1 << width
            per_probe = _PROBE_COST * min(1.0, keys / queries) + index_size / keys
            table_cost = len(tolerances) * (keys + index_size) / queries
            cost = table_cost + sum(_neighbours(width, t) * per_probe for t in tolerances)
            if best is None or cost < best[0]:
                plan = tuple(
                    Substring(PHASH_BITS - (s + 1) * width, width, t)
                    for s, t in enumerate(tolerances)
                )
                best = (cost, plan)
    assert best is not None
    return best[1]


def flip_masks(substring: Substring) -> I64:
    """Every ``width``-bit mask with at most ``tolerance`` bits set, fewest bits first."""
    keys = np.arange(1 << substring.width, dtype=np.int64)
    flips = np.bitwise_count(keys)
    masks = keys[flips <= substring.tolerance]
    return masks[np.argsort(flips[flips <= substring.tolerance], kind="stable")]


# --- kernels ----------------------------------------------------------------------------------


def _popcount_intrinsic(typingctx: Any, value: Any) -> Any:
    signature = nbtypes.int64(nbtypes.int64)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.ctpop(args[0])

    return signature, codegen


# Numba has no popcount of its own; LLVM's ctpop becomes VPOPCNTQ where the CPU has it.
popcount = cast(Callable[[Any], int], intrinsic(_popcount_intrinsic))


@_jit
def substring_key(code: _Int, shift: _Int, width: _Int) -> np.int64:
    return np.int64((code >> shift) & ((np.int64(1) << width) - 1))


@_jit
def counting_sort(codes: I64, shift: int, width: int) -> tuple[I64, I64]:
    """Stable order of ``codes`` by key, and the offsets of each key's run in that order."""
    offsets = np.zeros((1 << width) + 1, np.int64)
    for code in codes:
        offsets[substring_key(code, shift, width) + 1] += 1
    for run in range(1 << width):
        offsets[run + 1] += offsets[run]
    fill = offsets[:-1].copy()
    order = np.empty(codes.size, np.int64)
    for position in range(codes.size):
        key = substring_key(codes[position], shift, width)
        order[fill[key]] = position
        fill[key] += 1
    return order, offsets


@_jit
def found_earlier(diff: _Int, shifts: I64, widths: I64, tolerances: I64, upto: int) -> bool:
    for s in range(upto):
        if popcount(substring_key(diff, shifts[s], widths[s])) <= tolerances[s]:
            return True
    return False


@_jit
def _join_range(
    begin: int,
    end: int,
    query_codes: I64,
    query_order: I32,
    query_offsets: I64,
    per_item: int,
    first_item: int,
    self_join: bool,
    index_codes: I64,
    index_order: I32,
    index_offsets: I64,
    flips: I64,
    radius: int,
    stage: int,
    shifts: I64,
    widths: I64,
    tolerances: I64,
    out_query: I64,
    out_index: I64,
    out_distance: npt.NDArray[np.uint8],
    out_variant: npt.NDArray[np.int8],
) -> int:
    """Hits of sorted queries ``begin:end`` against the index on substring ``stage``.

    Returns how many there are; only the first ``out_*.size`` are written, so a caller whose
    buffers were too small reruns the range with buffers of that size.
    """
    shift, width = shifts[stage], widths[stage]
    capacity = out_query.size
    found = 0
    candidates = np.empty(4096, np.int64)
    positions = np.empty(4096, np.int64)
    block = begin
    while block < end:
        key = substring_key(query_codes[block], shift, width)
        block_end = min(query_offsets[key + 1], end)
        # Copy the neighbouring buckets into one run (the query's own bucket first, as flips
        # start with 0) so that the loop over candidates is long enough to vectorise. A self
        # join visits a pair of buckets from its lower key only.
        total = 0
        for flip in flips:
            other = key ^ flip
            if not self_join or other >= key:
                total += index_offsets[other + 1] - index_offsets[other]
        if total > candidates.size:
            candidates = np.empty(2 * total, np.int64)
            positions = np.empty(2 * total, np.int64)
        total = 0
        for flip in flips:
            other = key ^ flip
            if self_join and other < key:
                continue
            for i in range(index_offsets[other], index_offsets[other + 1]):
                candidates[total] = index_codes[i]
                positions[total] = i
                total += 1
        for q in range(block, block_end):
            code = query_codes[q]
            # In a self join the query is in its own bucket: pair it with the codes after it.
            start = q + 1 - index_offsets[key] if self_join else 0
            near = 0
            for t in range(start, total):
                near += popcount(code ^ candidates[t]) <= radius
            if near == 0:
                continue
            item = first_item + query_order[q] // per_item
            variant = query_order[q] % per_item + (0 if self_join else 1)
            for t in range(start, total):
                diff = code ^ candidates[t]
                distance = popcount(diff)
                other_item = index_order[positions[t]]
                if distance > radius or other_item == item:
                    continue
                if found_earlier(diff, shifts, widths, tolerances, stage):
                    continue
                if found < capacity:
                    out_query[found] = item
                    out_index[found] = other_item
                    out_distance[found] = distance
                    out_variant[found] = variant
                found += 1
        block = block_end
    return found


@_parallel_jit
def _join_parts(
    bounds: I64,
    query_codes: I64,
    query_order: I32,
    query_offsets: I64,
    per_item: int,
    first_item: int,
    self_join: bool,
    index_codes: I64,
    index_order: I32,
    index_offsets: I64,
    flips: I64,
    radius: int,
    stage: int,
    shifts: I64,
    widths: I64,
    tolerances: I64,
    out_query: I64,
    out_index: I64,
    out_distance: npt.NDArray[np.uint8],
    out_variant: npt.NDArray[np.int8],
    counts: I64,
) -> None:
    for part in prange(bounds.size - 1):
        counts[part] = _join_range(
            bounds[part],
            bounds[part + 1],
            query_codes,
            query_order,
            query_offsets,
            per_item,
            first_item,
            self_join,
            index_codes,
            index_order,
            index_offsets,
            flips,
            radius,
            stage,
            shifts,
            widths,
            tolerances,
            out_query[part],
            out_index[part],
            out_distance[part],
            out_variant[part],
        )


# --- driver -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    codes: I64  # sorted by key
    order: I32  # original position of each sorted code (32-bit: half a table's memory)
    offsets: I64  # run of key k is codes[offsets[k]:offsets[k + 1]]


def _sort_by_key(codes: I64, substring: Substring) -> _Table:
    if codes.size > _MAX_CODES:
        raise QueryError(f"a join takes at most {_MAX_CODES:,} codes, got {codes.size:,}")
    order, offsets = counting_sort(codes, substring.shift, substring.width)
    return _Table(codes=codes[order], order=order.astype(np.int32), offsets=offsets)


@dataclass(frozen=True)
class _Hits:
    query: I64
    index: I64
    distance: npt.NDArray[np.uint8]
    variant: npt.NDArray[np.int8]


def _join(
    queries: I64,
    per_item: int | None,
    first_item: int,
    tables: list[_Table],
    plan: tuple[Substring, ...],
    radius: int,
    *,
    self_join: bool,
) -> _Hits:
    """Hits of ``queries`` (identity codes, or ``per_item`` variants each from ``first_item``)."""
    shifts = np.array([s.shift for s in plan], np.int64)
    widths = np.array([s.width for s in plan], np.int64)
    tolerances = np.array([s.tolerance for s in plan], np.int64)
    parts = max(1, min(queries.size, _PARTS_PER_THREAD * numba.get_num_threads()))
    bounds = np.linspace(0, queries.size, parts + 1).astype(np.int64)
    capacity = max(256, queries.size // parts)  # a slice with more hits is redone alone
    buffers = _Hits(
        query=np.empty((parts, capacity), np.int64),
        index=np.empty((parts, capacity), np.int64),
        distance=np.empty((parts, capacity), np.uint8),
        variant=np.empty((parts, capacity), np.int8),
    )
    counts = np.zeros(parts, np.int64)
    found: list[_Hits] = []
    for stage, (substring, table) in enumerate(zip(plan, tables, strict=True)):
        query_table = table if self_join else _sort_by_key(queries, substring)
        arguments = (
            query_table.codes,
            query_table.order,
            query_table.offsets,
            1 if per_item is None else per_item,
            first_item,
            self_join,
            table.codes,
            table.order,
            table.offsets,
            flip_masks(substring),
            radius,
            stage,
            shifts,
            widths,
            tolerances,
        )
        _join_parts(bounds, *arguments, *_fields(buffers), counts)
        for part in range(parts):
            count = int(counts[part])
            if count <= capacity:
                found.append(
                    _Hits(
                        query=buffers.query[part, :count].copy(),
                        index=buffers.index[part, :count].copy(),
                        distance=buffers.distance[part, :count].copy(),
                        variant=buffers.variant[part, :count].copy(),
                    )
                )
                continue
            # Rare: this slice had more hits than its share of the buffer; redo it at full size.
            exact = _Hits(
                query=np.empty(count, np.int64),
                index=np.empty(count, np.int64),
                distance=np.empty(count, np.uint8),
                variant=np.empty(count, np.int8),
            )
            _join_range(bounds[part], bounds[part + 1], *arguments, *_fields(exact))
            found.append(exact)
    return _concat(found)


def _fields(hits: _Hits) -> tuple[I64, I64, npt.NDArray[np.uint8], npt.NDArray[np.int8]]:
    return hits.query, hits.index, hits.distance, hits.variant


def _concat(parts: list[_Hits]) -> _Hits:
    if not parts:
        return _Hits(
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.uint8),
            np.zeros(0, np.int8),
        )
    return _Hits(*(np.concatenate(column) for column in zip(*map(_fields, parts), strict=True)))


def _closest_per_pair(hits: list[_Hits], count: int) -> PairSet:
    """One row per unordered pair: the smallest distance, ties broken as :class:`PairSet` says."""
    merged = _concat(hits)
    of_right = (merged.query > merged.index) & (merged.variant > 0)
    left = np.minimum(merged.query, merged.index)
    right = np.maximum(merged.query, merged.index)
    pair = left * count + right
    order = np.lexsort((of_right, merged.variant, merged.distance, pair))
    pair = pair[order]
    first = np.ones(pair.size, np.bool_)
    first[1:] = pair[1:] != pair[:-1]
    keep = order[first]
    return PairSet(
        left=left[keep],
        right=right[keep],
        distance=merged.distance[keep],
        variant=merged.variant[keep],
        variant_of_right=of_right[keep],
    )
