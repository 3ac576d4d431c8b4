"""The in-process code index against a brute-force numpy computation on the same codes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from services import code_index
from services.code_index import CodeKind, StoredCodes, as_codes, phash_kind
from services.errors import QueryError
from services.hashing import int_to_phash
from services.records import ImageRecord
from tests.services.test_hamming_pairs import flip_bits, planted_codes

U64 = npt.NDArray[np.uint64]


def brute_force(
    stored: U64, ids: Sequence[str], queries: U64, radius: int
) -> list[list[tuple[str, int]]]:
    """Per query item (a row of ``queries``): (id, smallest distance) within ``radius``."""
    found = []
    for item in queries:
        distances = np.bitwise_count(item[:, None] ^ stored[None, :]).min(axis=0)
        best: dict[str, int] = {}
        for position in np.flatnonzero(distances <= radius):
            row_id, distance = ids[position], int(distances[position])
            best[row_id] = min(best.get(row_id, distance), distance)
        found.append(sorted(best.items(), key=lambda pair: (pair[1], pair[0])))
    return found


def arrivals(stored: U64, count: int, per_item: int, seed: int = 3) -> U64:
    """Query items of ``per_item`` codes, each item near some stored code in one of them."""
    rng = np.random.default_rng(seed)
    queries = rng.integers(0, 2**64 - 1, size=(count, per_item), dtype=np.uint64, endpoint=True)
    for item in range(count):
        base = stored[rng.integers(stored.size)]
        queries[item, rng.integers(per_item)] = flip_bits(base, int(rng.integers(0, 12)), rng)
    return queries


def record(row_id: str, code: int) -> ImageRecord:
    return ImageRecord(
        id=row_id,
        path=f"/{row_id}.jpg",
        phash=int_to_phash(code),
        width=1,
        height=1,
        format="JPEG",
        bytes=1,
    )


def near(index: StoredCodes, queries: U64) -> list[list[tuple[str, int]]]:
    records = [record(f"q{i}", 0) for i in range(queries.shape[0])]
    variants = [[int_to_phash(int(code)) for code in item] for item in queries]
    return [[(hit.id, hit.distance) for hit in hits] for hits in index.near(records, variants)]


@pytest.fixture
def small_tiers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiers small enough that a few thousand codes cross every merge."""
    monkeypatch.setattr(code_index, "TAIL_ROWS", 64)
    monkeypatch.setattr(code_index, "DELTA_MIN_ROWS", 256)


@pytest.mark.parametrize("radius", [0, 4, 8, 12])
def test_one_bulk_load_matches_brute_force(radius: int) -> None:
    stored = planted_codes(20000)
    ids = [f"{i:064x}" for i in range(stored.size)]
    index = StoredCodes([phash_kind(radius)])
    index.add("phash", ids, stored)
    queries = arrivals(stored, 60, 8)

    expected = brute_force(stored, ids, queries, radius)
    assert any(expected)  # not a vacuous comparison
    assert near(index, queries) == expected


@pytest.mark.usefixtures("small_tiers")
def test_codes_added_batch_by_batch_cross_every_tier() -> None:
    stored = planted_codes(3000, seed=7)
    ids = [f"{i:064x}" for i in range(stored.size)]
    index = StoredCodes([phash_kind(8)])
    queries = arrivals(stored, 40, 8)
    for start in range(0, stored.size, 37):
        index.add("phash", ids[start : start + 37], stored[start : start + 37])
        if start % (37 * 20) == 0:  # tail only, tail and delta, main, all three
            seen = start + 37
            assert near(index, queries) == brute_force(stored[:seen], ids[:seen], queries, 8)
    assert len(index) == stored.size
    assert near(index, queries) == brute_force(stored, ids, queries, 8)


@pytest.mark.usefixtures("small_tiers")
def test_forgotten_rows_are_never_returned_and_come_back_when_added_again() -> None:
    stored = planted_codes(2000, seed=11)
    ids = [f"{i:064x}" for i in range(stored.size)]
    index = StoredCodes([phash_kind(8)])
    index.add("phash", ids, stored)
    queries = stored[:50, None].copy()  # each row's own code: it is its own nearest
    gone = ids[:25]

    index.forget(gone)
    index.add("phash", ids[:1], stored[:1])  # a no-op tail add: merges keep forgetting
    found = near(index, queries)
    kept = [i for i in range(stored.size) if ids[i] not in set(gone[1:])]
    expected = brute_force(stored[kept], [ids[i] for i in kept], queries, 8)
    assert found == expected
    assert all(row_id not in set(gone[1:]) for hits in found for row_id, _ in hits)
    assert found[0][0] == (ids[0], 0)  # stored again after it was forgotten

    for start in range(0, 1000, 64):  # merges drop the forgotten rows for good
        index.add("phash", [f"n{start}-{i}" for i in range(64)], planted_codes(64, seed=start))
    assert all(row_id not in set(gone[1:]) for hits in near(index, queries) for row_id, _ in hits)


def test_kinds_have_their_own_codes_and_radii() -> None:
    """A second kind (as a crop code would be) is searched with its own query codes and radius;
    a row's hit is its smallest distance over the kinds."""
    rng = np.random.default_rng(5)
    phash = rng.integers(0, 2**64 - 1, size=500, dtype=np.uint64, endpoint=True)
    crop = rng.integers(0, 2**64 - 1, size=500, dtype=np.uint64, endpoint=True)
    ids = [f"r{i}" for i in range(500)]
    crop_of: dict[str, int] = {}
    kind = CodeKind(
        name="crop",
        radius=3,
        stored_code=lambda r: None,
        query_codes=lambda r, _variants: [crop_of[r.id]],
    )
    index = StoredCodes([phash_kind(6), kind])
    index.add("phash", ids, phash)
    index.add("crop", ids, crop)
    query = record("q", int(flip_bits(phash[10], 6, rng)))
    crop_of["q"] = int(flip_bits(crop[20], 3, rng))
    far = record("far", int(flip_bits(phash[30], 7, rng)))
    crop_of["far"] = int(flip_bits(crop[40], 4, rng))

    hits = index.near([query, far], [[query.phash], [far.phash]])

    assert [(h.id, h.distance, h.kind) for h in hits[0]] == [
        ("r20", 3, "crop"),
        ("r10", 6, "phash"),
    ]
    assert hits[1] == []  # 7 > 6 on phash, 4 > 3 on crop


def test_bad_input_is_refused() -> None:
    index = StoredCodes([phash_kind(8)])
    with pytest.raises(QueryError, match="no index of kind 'crop'"):
        index.add("crop", ["a"], as_codes([1]))
    with pytest.raises(QueryError, match="1 ids but"):
        index.add("phash", ["a"], as_codes([1, 2]))
    with pytest.raises(QueryError, match="one index per code kind"):
        StoredCodes([phash_kind(8), phash_kind(4)])
