"""Bulk reads on a real Milvus Lite server: every row once, with its own vector, whatever the
page size, the ids or the rows deleted before the read."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import services.store as store_module
from services.store import MilvusStore
from tests.conftest import StoreFactory
from tests.records import random_records

pytestmark = pytest.mark.integration

# Ids outside the hex alphabet land in the first ("" .. "1") and last ("f" ..) key ranges, and
# on the cuts themselves ("1", "f...").
ODD_IDS = ("0", "1", "10", "A-upper", "f", "fff", "z-last", "~tilde", "g")


def stored_rows(store: MilvusStore, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    records = random_records(count, dim=8, seed=seed)
    records += [
        replace(r, id=odd, path=f"/odd/{i}.jpg")
        for i, (r, odd) in enumerate(
            zip(random_records(len(ODD_IDS), seed=seed + 1), ODD_IDS, strict=True)
        )
    ]
    store.upsert(records)
    return {r.id: np.asarray(r.clip, dtype=np.float32) for r in records}


@pytest.mark.parametrize(("page_rows", "threads"), [(1, 1), (7, 3), (64, 2), (10_000, 1)])
def test_every_row_once_with_its_vector(
    make_store: StoreFactory, page_rows: int, threads: int
) -> None:
    store = make_store()
    expected = stored_rows(store, 150)
    pages = list(store.bulk_pages("", ["id", "path", "clip"], page_rows=page_rows, threads=threads))
    ids = [str(row["id"]) for page in pages for row in page.rows]
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == set(expected)
    assert all(len(page.rows) <= page_rows for page in pages)
    assert ids == sorted(ids)  # key order, across pages and ranges
    vectors = np.concatenate([page.clip for page in pages if page.clip is not None])
    np.testing.assert_array_equal(vectors, np.stack([expected[i] for i in ids]))


def test_deleted_rows_and_filters_are_left_out(make_store: StoreFactory) -> None:
    store = make_store()
    expected = stored_rows(store, 120, seed=3)
    gone = sorted(expected)[::5]
    store.delete(gone)
    kept = {i: v for i, v in expected.items() if i not in gone}
    scan = store.scan_vectors()
    assert sorted(scan.ids) == sorted(kept)
    for row, content_id in enumerate(scan.ids):
        np.testing.assert_array_equal(scan.clip[row], kept[content_id])
    assert set(scan.paths) == {r.path for r in store.get(list(kept))}
    odd = store.scan_vectors('path like "/odd/%"')
    assert sorted(odd.ids) == sorted(set(ODD_IDS) - set(gone))


def test_hash_scan_with_vectors_matches_the_plain_scan(make_store: StoreFactory) -> None:
    store = make_store()
    expected = stored_rows(store, 90, seed=5)
    plain = store.scan_hashes(keepers=True)
    fast = store.scan_hashes(keepers=True, vectors=True)
    order = {content_id: row for row, content_id in enumerate(plain.ids)}
    rows = [order[content_id] for content_id in fast.ids]
    assert sorted(fast.ids) == sorted(plain.ids) == sorted(expected)
    np.testing.assert_array_equal(fast.codes, plain.codes[rows])
    assert plain.variants is not None and fast.variants is not None
    np.testing.assert_array_equal(fast.variants, plain.variants[rows])
    assert fast.keepers is not None and plain.keepers is not None
    assert fast.keepers.paths == [plain.keepers.paths[r] for r in rows]
    assert fast.clip is not None and plain.clip is None
    np.testing.assert_array_equal(fast.clip, np.stack([expected[i] for i in fast.ids]))


def test_pages_grow_once_the_collection_is_large(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Page sizes follow the collection's row count: small pages up to BULK_LARGE_FROM rows,
    large ones above it (sizes scaled down here to rows of 8-d vectors)."""
    store = make_store()
    count = len(stored_rows(store, 2_000, seed=7))
    monkeypatch.setattr(store_module, "BULK_PAGE_BYTES", 64 * (4 * 8 + 256))
    monkeypatch.setattr(store_module, "BULK_LARGE_PAGE_BYTES", 1_000 * (4 * 8 + 256))

    def pages(large_from: int) -> tuple[int, int]:
        monkeypatch.setattr(store_module, "BULK_LARGE_FROM", large_from)
        found = list(store.bulk_pages("", ["id", "clip"]))
        return max(len(page.rows) for page in found), sum(len(page.rows) for page in found)

    assert pages(count) == (64, count)
    largest, rows = pages(count - 1)
    assert largest > 64 and rows == count


def test_rows_stored_after_the_count_are_read_too(
    make_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vectors go into a matrix made for the rows counted before the read; rows that
    arrive meanwhile (here: a count of 5 for 60 rows) grow it, and none is lost."""
    store = make_store()
    expected = stored_rows(store, 51, seed=9)
    monkeypatch.setattr(store, "count", lambda expr="": 5)
    for scan in (store.scan_vectors(), store.scan_hashes(vectors=True)):
        assert scan.clip is not None
        assert sorted(scan.ids) == sorted(expected)
        np.testing.assert_array_equal(scan.clip, np.stack([expected[i] for i in scan.ids]))
