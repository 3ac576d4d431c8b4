"""An in-process index of stored patch codes (:mod:`services.patches`), for dedup on arrival: which
stored rows share patches with an arriving image on one placement, without a scan.

Every stored patch code goes into one :class:`~services.code_index.CodeIndex` (multi-index
hashing, exact within the patch radius) under its *patch number*; the patches' places and each
row's frame are kept beside it, so the candidates the codes find are verified as whole-collection
dedup verifies them (:func:`services.patch_pairs.verify_groups`: the same numba kernel). Rows are
the rows of the id table of :class:`services.code_index.StoredCodes`, which holds this index and
decides which rows are alive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from services.patch_pairs import verify_groups
from services.patches import MATCHES_NEEDED, PatchTable, from_units, to_units

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
Alive = Callable[[I64], npt.NDArray[np.bool_]]


class CodeIndex(Protocol):
    """What this index keeps its codes in: :class:`services.code_index.CodeIndex` (which builds
    this one, so it is not imported here)."""

    radius: int

    def add(self, rows: I64, codes: npt.NDArray[np.uint64], *, keep: Alive) -> None: ...
    def search(self, queries: npt.NDArray[np.uint64]) -> tuple[I64, I64, I64]: ...


_MIN_CAPACITY: Final = 1024
_G = TypeVar("_G", bound=np.generic)


@dataclass(frozen=True)
class PatchMatches:
    """Query rows and the stored rows whose patches agree with theirs, with how many agree."""

    query: I64
    row: I64
    shared: I64


class StoredPatches:
    """The patch codes of stored rows in ``codes`` (an empty index of the patch radius), verified
    by placement. Not thread-safe (one per worker process, as
    :class:`~services.code_index.StoredCodes`)."""

    def __init__(self, codes: CodeIndex, needed: int = MATCHES_NEEDED) -> None:
        self.radius = codes.radius
        self.needed = needed
        self._codes = codes
        self._sets = 0  # one set per row added with codes
        self._set_row = np.empty(0, np.int64)  # the id-table row of each set
        self._set_first = np.empty(0, np.int64)  # its first patch number
        self._set_count = np.empty(0, np.int64)
        self._width = np.empty(0, np.float32)  # its frame
        self._height = np.empty(0, np.float32)
        self._patches = 0
        self._patch_set = np.empty(0, np.int32)
        # As stored (services.patches.to_units): 2 bytes each, made fractions when verified.
        self._x = np.empty(0, np.uint16)
        self._y = np.empty(0, np.uint16)
        self._half = np.empty(0, np.uint16)

    def __len__(self) -> int:
        """Patch codes held (forgotten rows' included until their next merge)."""
        return self._patches

    def add(self, rows: I64, table: PatchTable, *, alive: Alive) -> None:
        """Add the patch codes of ``table``'s rows under the id-table ``rows`` (``rows[i]`` is
        table row i); rows without codes are left out. ``alive`` says which id-table rows
        survive a merge of the code index."""
        known = np.flatnonzero(table.known)
        if known.size == 0:
            return
        counts = np.bincount(table.row, minlength=table.known.size)[known]
        sets = np.arange(self._sets, self._sets + known.size, dtype=np.int64)
        patches = np.arange(self._patches, self._patches + table.codes.size, dtype=np.int64)
        self._grow_sets(self._sets + known.size)
        self._grow_patches(self._patches + table.codes.size)
        self._set_row[sets] = rows[known]
        self._set_first[sets] = self._patches + np.cumsum(counts) - counts
        self._set_count[sets] = counts
        self._width[sets], self._height[sets] = table.width[known], table.height[known]
        set_of_table_row = np.full(table.known.size, -1, np.int64)
        set_of_table_row[known] = sets
        self._patch_set[patches] = set_of_table_row[table.row]
        self._x[patches] = to_units(table.x)
        self._y[patches] = to_units(table.y)
        self._half[patches] = to_units(table.half)
        self._sets += known.size
        self._patches += table.codes.size
        self._codes.add(
            patches, table.codes, keep=lambda p: alive(self._set_row[self._patch_set[p]])
        )

    def near(self, table: PatchTable, *, alive: Alive) -> PatchMatches:
        """Every (row of ``table``, alive stored row) pair whose patches agree on one placement:
        at least ``needed`` patch codes within the radius, verified as dedup verifies them."""
        query, patch, _ = self._codes.search(table.codes)
        stored_set = self._patch_set[patch]
        live = alive(self._set_row[stored_set])
        query, patch, stored_set = query[live], patch[live], stored_set[live]
        empty = np.zeros(0, np.int64)
        if query.size == 0:
            return PatchMatches(empty, empty, empty)
        # The candidate sets' patches, copied into one small table with the queries' after them
        # (stored rows first, as the join orients a pair of rows: the same verdict, bit for bit).
        candidates, local_set = np.unique(stored_set, return_inverse=True)
        counts = self._set_count[candidates]
        local_first = np.cumsum(counts) - counts
        taken = np.concatenate(
            [np.arange(f, f + c) for f, c in zip(self._set_first[candidates], counts, strict=True)]
        )
        query_row = candidates.size + table.row[query]
        order = np.lexsort((query_row, local_set))
        shared = verify_groups(
            local_set[order],
            query_row[order],
            (local_first[local_set] + patch - self._set_first[stored_set])[order],
            taken.size + query[order],
            np.concatenate(
                [np.repeat(np.arange(candidates.size), counts), candidates.size + table.row]
            ),
            x=np.concatenate([from_units(self._x[taken]), table.x]),
            y=np.concatenate([from_units(self._y[taken]), table.y]),
            half=np.concatenate([from_units(self._half[taken]), table.half]),
            width=np.concatenate([self._width[candidates], table.width]),
            height=np.concatenate([self._height[candidates], table.height]),
            needed=self.needed,
        )
        return PatchMatches(
            shared.right - candidates.size, self._set_row[candidates[shared.left]], shared.shared
        )

    def _grow_sets(self, needed: int) -> None:
        if needed > self._set_row.size:
            capacity = max(needed, 2 * self._set_row.size, _MIN_CAPACITY)
            self._set_row = _grown(self._set_row, capacity, self._sets)
            self._set_first = _grown(self._set_first, capacity, self._sets)
            self._set_count = _grown(self._set_count, capacity, self._sets)
            self._width = _grown(self._width, capacity, self._sets)
            self._height = _grown(self._height, capacity, self._sets)

    def _grow_patches(self, needed: int) -> None:
        if needed > self._patch_set.size:
            capacity = max(needed, 2 * self._patch_set.size, _MIN_CAPACITY)
            self._patch_set = _grown(self._patch_set, capacity, self._patches)
            self._x = _grown(self._x, capacity, self._patches)
            self._y = _grown(self._y, capacity, self._patches)
            self._half = _grown(self._half, capacity, self._patches)


def _grown(array: npt.NDArray[_G], capacity: int, used: int) -> npt.NDArray[_G]:
    grown = np.empty(capacity, array.dtype)
    grown[:used] = array[:used]
    return grown
