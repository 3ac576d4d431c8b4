"""All pairs of rows that share patches on one placement (:mod:`services.patches`): the copies
that crops, borders and overlays hide from the whole-frame and frame codes.

One multi-index-hashing join (:func:`services.hamming_pairs.pairs_within`) over every row's
patch codes finds the patch pairs within the radius; those of one pair of rows are gathered and
the pair is kept when :data:`services.patches.MATCHES_NEEDED` of them agree on where one frame
lies in the other (:func:`services.patches.shared_patches`, the same test in one numba pass per
row pair).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt

from services.hamming_pairs import pairs_within
from services.patches import (
    MATCHES_NEEDED,
    PatchCodes,
    PatchTable,
    patch_radius,
    stored_table,
    verdict,
)

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class PatchPairs:
    """Row pairs ``left < right`` whose patches agree, each once, with how many agree."""

    left: I64
    right: I64
    shared: I64

    def __len__(self) -> int:
        return int(self.left.size)


def pairs_of_codes(codes: Sequence[PatchCodes | None], max_hamming: int) -> PatchPairs:
    """The pairs of ``codes`` (indices; None: unknown, pairs with nothing) whose patches agree at
    a dedup radius of ``max_hamming``, packed as the store packs them (the stored form: so a
    fresh image's codes pair as they will once stored)."""
    return patch_pairs(stored_table(codes), patch_radius(max_hamming))


def patch_pairs(table: PatchTable, radius: int, needed: int = MATCHES_NEEDED) -> PatchPairs:
    """The pairs of rows of ``table`` with at least ``needed`` patches agreeing within
    ``radius`` bits on one placement."""
    found = pairs_within(np.ascontiguousarray(table.codes), radius)
    row_a, row_b = table.row[found.left], table.row[found.right]
    other = row_a != row_b
    first, second = found.left[other], found.right[other]
    row_a, row_b = row_a[other], row_b[other]
    swap = row_a > row_b  # orient every patch pair as (patch of left row, patch of right row)
    first, second = np.where(swap, second, first), np.where(swap, first, second)
    left, right = np.minimum(row_a, row_b), np.maximum(row_a, row_b)
    order = np.lexsort((right, left))
    return verify_groups(
        left[order], right[order], first[order], second[order], table.row,
        x=table.x, y=table.y, half=table.half, width=table.width, height=table.height,
        needed=needed,
    )  # fmt: skip


def verify_groups(
    left: I64,
    right: I64,
    first: I64,
    second: I64,
    row_of_patch: I64,
    *,
    x: F32,
    y: F32,
    half: F32,
    width: F32,
    height: F32,
    needed: int,
) -> PatchPairs:
    """The row pairs ``(left[k], right[k])`` (sorted by left, then right) whose agreeing patch
    pairs ``(first[k], second[k])`` (patch numbers: of left's, of right's) are at least
    ``needed`` on one placement (:func:`services.patches.verdict`). ``row_of_patch``: the row of
    every patch, non-decreasing (a row's patches are contiguous); ``x`` .. ``half`` per patch,
    ``width`` and ``height`` per row."""
    if left.size == 0:
        return PatchPairs(left, right, left.copy())
    starts = np.flatnonzero(np.r_[True, (left[1:] != left[:-1]) | (right[1:] != right[:-1])])
    ends = np.r_[starts[1:], left.size]
    busy = ends - starts >= needed
    starts, ends = starts[busy], ends[busy]
    first_patch = np.searchsorted(row_of_patch, np.arange(width.size + 1))
    shared = _verdicts(
        starts, ends, first, second, left[starts], right[starts], first_patch,
        x, y, half, width, height,
    )  # fmt: skip
    keep = shared >= needed
    return PatchPairs(left[starts][keep], right[starts][keep], shared[keep])


@numba.njit(cache=True, nogil=True)
def _verdicts(
    starts: I64, ends: I64, first: I64, second: I64, row_a: I64, row_b: I64, first_patch: I64,
    x: F32, y: F32, half: F32, width: F32, height: F32,
) -> I64:  # fmt: skip
    """:func:`services.patches.verdict` of each group ``starts[g]:ends[g]`` of patch pairs
    (``first`` of row ``row_a[g]``, ``second`` of row ``row_b[g]``)."""
    shared = np.zeros(starts.size, np.int64)
    for g in range(starts.size):
        p, q = first[starts[g] : ends[g]], second[starts[g] : ends[g]]
        a, b = row_a[g], row_b[g]
        a_all = slice(first_patch[a], first_patch[a + 1])
        b_all = slice(first_patch[b], first_patch[b + 1])
        shared[g] = verdict(
            x[p], y[p], half[p], x[q], y[q], half[q],
            x[a_all], y[a_all], width[a], height[a],
            x[b_all], y[b_all], width[b], height[b],
        )  # fmt: skip
    return shared
