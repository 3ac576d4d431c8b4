"""The vector cache: a bulk read with vectors keeps them, and the next read takes them from it,
fetching from Milvus (a real Milvus Lite server) only the rows added since."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from services.store import MilvusStore
from services.vector_cache import COMPACT_ABOVE, VectorCache, digests
from tests.conftest import StoreFactory
from tests.records import random_records


def _with_cache(plain: MilvusStore, tmp_path: Path) -> MilvusStore:
    """A second store on ``plain``'s collection that keeps a vector cache under ``tmp_path``."""
    return MilvusStore.connect(
        plain.uri, plain.collection, plain.contract, vector_cache=tmp_path / "vectors"
    )


def test_chunks_hold_vectors_by_id_and_a_damaged_one_is_left_out(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = [f"{k:064x}" for k in range(300)] + ["not-a-sha", "z"]
    vectors = rng.standard_normal((len(ids), 4)).astype(np.float32)
    cache = VectorCache(tmp_path / "c", 4)
    cache.add(ids[:200], vectors[:200])
    cache.add(ids[200:], vectors[200:])
    again = VectorCache(tmp_path / "c", 4)  # another process opening the folder
    assert again.rows == len(ids)
    wanted = [*ids[::-1], "f" * 64]
    rows = again.lookup(digests(wanted))
    assert rows[-1] == -1 and (rows[:-1] >= 0).all()
    out = np.zeros((len(wanted), 4), np.float32)
    found = np.flatnonzero(rows >= 0)
    again.read_into(out, found, rows[found])
    np.testing.assert_array_equal(out[:-1], vectors[::-1])
    # A chunk whose vectors file is cut short is never read.
    second = sorted((tmp_path / "c").glob("*.f32"))[1]
    second.write_bytes(second.read_bytes()[:-4])
    assert VectorCache(tmp_path / "c", 4).rows == 200
    again.clear()
    assert VectorCache(tmp_path / "c", 4).rows == 0


@pytest.mark.integration
def test_a_second_bulk_read_takes_the_vectors_from_the_cache(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    plain = make_store()
    records = random_records(400, dim=8, seed=5)
    plain.upsert(records)
    store = _with_cache(plain, tmp_path)
    try:
        first = store.scan_hashes(keepers=True, vectors=True)
        cache = store.vector_cache()
        assert cache is not None and cache.rows == 400
        assert cache.folder == tmp_path / "vectors" / f"{plain.collection}-{plain.instance}"
        truth = plain.scan_hashes(keepers=True, vectors=True)
        assert list(first.ids) == list(truth.ids)
        assert first.clip is not None and truth.clip is not None
        np.testing.assert_array_equal(first.clip, truth.clip)

        # Rows added since: fetched by id (and kept); the others come from the cache. To show
        # which, the cached copy of one row is changed on disk: the read returns the change.
        added = [replace(r, id=f"{k:064x}") for k, r in enumerate(random_records(12, seed=9))]
        plain.upsert(added)
        chunk = next(iter(sorted(cache.folder.glob("*.f32"))))
        vectors = np.fromfile(chunk, np.float32).reshape(-1, 8)
        vectors[0] = 7.0
        vectors.tofile(chunk)
        ids_in_chunk = np.fromfile(chunk.with_suffix(".ids"), np.uint8).reshape(-1, 32)
        marked = ids_in_chunk[0].tobytes().hex()

        second = store.scan_hashes(keepers=True, vectors=True)
        truth = plain.scan_hashes(keepers=True, vectors=True)
        assert list(second.ids) == list(truth.ids) and len(second.ids) == 412
        assert second.cached == 400  # the 12 added since were read by id
        assert second.clip is not None and truth.clip is not None
        at = list(second.ids).index(marked)
        assert (second.clip[at] == 7.0).all()
        others = np.arange(len(second.ids)) != at
        np.testing.assert_array_equal(second.clip[others], truth.clip[others])
        assert second.keepers is not None and truth.keepers is not None
        assert second.keepers.paths == truth.keepers.paths
        assert VectorCache(cache.folder, 8).rows == 412
    finally:
        store.close()


@pytest.mark.integration
def test_a_mostly_stale_cache_is_rebuilt(make_store: StoreFactory, tmp_path: Path) -> None:
    plain = make_store()
    plain.upsert(random_records(100, dim=8, seed=6))
    store = _with_cache(plain, tmp_path)
    try:
        store.scan_hashes(vectors=True)
        old = sorted(plain.scan_hashes().ids)
        plain.delete(old[:60])  # most of what the cache holds is gone
        plain.upsert([replace(r, id=f"{k:064x}") for k, r in enumerate(random_records(60, seed=2))])
        scan = store.scan_hashes(vectors=True)
        truth = plain.scan_hashes(vectors=True)
        assert scan.clip is not None and truth.clip is not None
        np.testing.assert_array_equal(scan.clip, truth.clip)
        cache = store.vector_cache()
        assert cache is not None and cache.rows == 100  # rebuilt: only the rows stored now
    finally:
        store.close()


@pytest.mark.integration
def test_inserts_append_their_vectors_and_a_whole_read_compacts_them(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    plain = make_store()
    store = _with_cache(plain, tmp_path)
    try:
        records = random_records(COMPACT_ABOVE + 6, dim=8, seed=11)
        for record in records:  # one small write at a time, as workers' batches are
            store.upsert([record])
        store.upsert(records[:3])  # stored already: nothing new to cache
        cache = store.vector_cache()
        assert cache is not None
        assert (cache.rows, cache.chunks) == (len(records), len(records))
        plain.delete([records[0].id])  # deleted since: the compacted cache drops it

        scan = store.scan_hashes(keepers=True, vectors=True)
        truth = plain.scan_hashes(keepers=True, vectors=True)
        assert scan.cached == len(records) - 1 and truth.cached == 0
        assert scan.clip is not None and truth.clip is not None
        np.testing.assert_array_equal(scan.clip, truth.clip)
        compacted = VectorCache(cache.folder, 8)
        assert (compacted.rows, compacted.chunks) == (len(records) - 1, 1)

        # The clusters' read takes the same cache: rows without vectors, then the vectors.
        stored = store.scan_vectors()
        direct = plain.scan_vectors()
        assert list(stored.ids) == list(direct.ids) and stored.paths == direct.paths
        np.testing.assert_array_equal(stored.clip, direct.clip)
        np.testing.assert_array_equal(stored.clusters, direct.clusters)
        store.drop()  # the instance's cache goes with it
        assert not cache.folder.exists()
    finally:
        store.close()


@pytest.mark.integration
def test_clusters_read_fills_an_empty_cache(make_store: StoreFactory, tmp_path: Path) -> None:
    plain = make_store()
    plain.upsert(random_records(50, dim=8, seed=12))
    store = _with_cache(plain, tmp_path)
    try:
        first = store.scan_vectors()  # nothing cached: read with vectors, then cached
        cache = store.vector_cache()
        assert cache is not None and cache.rows == 50
        np.testing.assert_array_equal(first.clip, plain.scan_vectors().clip)
        scan = store.scan_hashes(vectors=True)
        assert scan.cached == 50
    finally:
        store.close()
