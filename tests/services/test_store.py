"""The Milvus store on a real Milvus Lite server: schema contract, idempotent upserts, errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from services.errors import QueryError, SchemaMismatchError, StoreUnavailableError
from services.schema import SchemaContract
from services.store import MilvusStore, milvus_client
from tests.conftest import StoreFactory, free_port
from tests.records import random_records

pytestmark = pytest.mark.integration


def test_roundtrip_keeps_every_field(make_store: StoreFactory) -> None:
    store = make_store()
    records = random_records(40)
    assert store.upsert(records) == 40
    assert store.count() == 40
    stored = {r.id: r for r in store.get([r.id for r in records], with_vectors=True)}
    for record in records:
        got = stored[record.id]
        assert got.phash == record.phash
        expected = replace(record, paths=record.all_paths)
        assert got == expected  # every scalar field, sentinels mapped back to None
        assert got.clip is not None and record.clip is not None
        np.testing.assert_allclose(got.clip, record.clip, rtol=1e-6)


def test_upserts_are_idempotent_and_merge_paths(make_store: StoreFactory) -> None:
    store = make_store()
    records = random_records(10)
    store.upsert(records)
    store.upsert(records)
    again = [
        replace(r, path=r.path.replace("/photos/", "/backup/"), tags=("copy",)) for r in records
    ]
    # The same content twice in one batch, and already stored: one row each.
    store.upsert(again + again[:3])
    assert store.count() == 10
    got = store.get([records[0].id])[0]
    assert got.path == records[0].path  # the first path seen stays canonical
    assert got.paths == (records[0].path, again[0].path)
    assert "copy" in got.tags and set(records[0].tags) <= set(got.tags)


def test_contract_recorded_and_mismatch_refused(make_store: StoreFactory, milvus_uri: str) -> None:
    store = make_store(clip_model="model-a", clip_dim=8)
    name = store.collection
    reopened = MilvusStore.connect(milvus_uri, name, SchemaContract.current("model-a", 8))
    assert reopened.count() == 0
    with pytest.raises(SchemaMismatchError, match="CLIP model 'model-a', configured 'model-b'"):
        MilvusStore.connect(milvus_uri, name, SchemaContract.current("model-b", 8))
    with pytest.raises(SchemaMismatchError, match="CLIP dimension 8, the model gives 16"):
        MilvusStore.connect(milvus_uri, name, SchemaContract.current("model-a", 16))
    with pytest.raises(SchemaMismatchError, match="CLIP model 'model-a', configured None"):
        MilvusStore.connect(milvus_uri, name, SchemaContract.current(None, None))


def test_foreign_collection_refused(milvus_uri: str) -> None:
    client = milvus_client(milvus_uri)
    client.create_collection("foreign_collection", dimension=4)
    try:
        with pytest.raises(SchemaMismatchError, match="not created by lookalike"):
            MilvusStore.connect(
                milvus_uri, "foreign_collection", SchemaContract.current(None, None)
            )
    finally:
        client.drop_collection("foreign_collection")
        client.close()


def test_wrong_vector_dimension_rejected(make_store: StoreFactory) -> None:
    store = make_store(clip_dim=8)
    bad = replace(random_records(1)[0], clip=np.ones(5, dtype=np.float32))
    with pytest.raises(QueryError, match=r"shape \(5,\).*stores \(8,\)"):
        store.upsert([bad])
    with pytest.raises(QueryError, match="query vector has shape"):
        store.search_clip(np.ones(5, dtype=np.float32), "", 5)
    assert store.count() == 0


def test_hash_only_collection(make_store: StoreFactory) -> None:
    store = make_store(clip_model=None, clip_dim=None)
    records = random_records(20, dim=None)
    store.upsert(records)
    assert store.count() == 20
    with pytest.raises(QueryError, match="hash-only"):
        store.search_clip(np.ones(8, dtype=np.float32), "", 5)
    hits = store.search_phash([records[0].phash], 0, "", 10)
    assert records[0].id in {hit.record.id for hit in hits}


def test_iterate_streams_everything(make_store: StoreFactory) -> None:
    store = make_store()
    records = random_records(250)
    store.upsert(records)
    seen = [r.id for r in store.iterate('source == "phone"', batch_size=40)]
    assert sorted(seen) == sorted(r.id for r in records if r.source == "phone")


def test_unreachable_milvus_is_a_clear_error() -> None:
    port = free_port()  # nothing listens here
    with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}.*unreachable"):
        MilvusStore.connect(
            f"http://127.0.0.1:{port}", "x", SchemaContract.current(None, None), timeout=2
        )


def test_hash_scan_reads_hashes_and_keeper_columns_as_stored(make_store: StoreFactory) -> None:
    store = make_store()
    records = random_records(300, dim=8)
    store.upsert(records)
    scan = store.scan_hashes(keepers=True, batch_size=128)  # several batches
    assert sorted(scan.ids) == sorted(r.id for r in records)
    assert scan.keepers is not None and scan.variants is not None
    by_id = {r.id: r for r in records}
    for row, content_id in enumerate(scan.ids):
        stored = by_id[content_id]
        assert int(scan.codes[row]).to_bytes(8, "big") == stored.phash
        assert [int(v).to_bytes(8, "big") for v in scan.variants[row]] == list(
            stored.phash_dihedral
        )
        light = scan.keepers.record(row, content_id, int(scan.codes[row]))
        assert (light.path, light.width, light.height, light.bytes, light.format) == (
            stored.path,
            stored.width,
            stored.height,
            stored.bytes,
            stored.format,
        )
        assert light.exif_datetime == stored.exif_datetime
    assert store.scan_hashes().keepers is None


def test_every_client_pings_as_milvus_lite_allows(tmp_path: Path) -> None:
    """pymilvus shares one channel per address across the process, with the options of the
    client that made it. A server's health check must not make it with pymilvus's 10 s pings,
    which Milvus Lite answers with GOAWAY "too_many_pings" (a failed call on a busy machine)."""
    from cli.stack.milvus_lite import EmbeddedMilvus
    from cli.stack.net import free_port
    from services.store import GRPC_OPTIONS

    with EmbeddedMilvus(tmp_path / "milvus", free_port()) as server:  # waits on health checks
        client = milvus_client(server.uri)
        try:
            assert client._handler._grpc_options == GRPC_OPTIONS  # pymilvus's own record
            assert client.list_collections() == []
        finally:
            client.close()
