"""Quarantine for s3:// duplicates against a real S3 server (moto): copy, verify, delete; the
manifest is an object under the quarantine prefix and `undo` copies each object back, never
over one that is there now. On a real Milvus Lite."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from services import sources
from services.dedup import DedupOptions, find_duplicates, resolve
from services.keepers import parse_policy
from services.manifest import read_manifest
from services.records import ImageRecord
from services.store import MilvusStore
from services.undo import undo
from testkit.s3server import S3Server
from tests.conftest import StoreFactory
from tests.services.test_dedup import BASE, MemoryDecisions, flip, record

pytestmark = pytest.mark.integration

CONTENT = {"keep.jpg": b"the keeper", "copy.jpg": b"a near copy", "phone.jpg": b"from the phone"}
KEEP = "s3://photos/2019/keep.jpg"
BACKUP = "s3://photos/backup/keep.jpg"
COPY = "s3://photos/2019/copy.jpg"
QUARANTINE = "s3://quarantine/dups"


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh server state; this process's S3 client configured for it."""
    s3_server.reset()
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    sources._s3_client.cache_clear()
    client = s3_server.client()
    client.create_bucket(Bucket="photos")
    client.create_bucket(Bucket="quarantine")
    yield client
    sources._s3_client.cache_clear()


def _put(s3: Any, uri: str, body: bytes) -> None:
    bucket, key = sources.split_s3_uri(uri)
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def _get(s3: Any, uri: str) -> bytes | None:
    bucket, key = sources.split_s3_uri(uri)
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def _row(name: str, phash: int, *paths: str) -> ImageRecord:
    base = record(name, phash)
    return replace(
        base, id=hashlib.sha256(CONTENT[name]).hexdigest(), path=paths[0], paths=tuple(paths)
    )


def _bucket_library(store: MilvusStore, s3: Any) -> dict[str, ImageRecord]:
    """A keeper also stored as a byte-identical backup, and a near copy: all objects."""
    for uri, name in ((KEEP, "keep.jpg"), (BACKUP, "keep.jpg"), (COPY, "copy.jpg")):
        _put(s3, uri, CONTENT[name])
    rows = {
        "keep.jpg": replace(_row("keep.jpg", BASE, KEEP, BACKUP), width=4000, height=3000),
        "copy.jpg": _row("copy.jpg", flip(BASE, 1), COPY),
    }
    store.upsert(list(rows.values()))
    return rows


def _resolve(store: MilvusStore, decisions: MemoryDecisions, **how: Any) -> Any:
    report = find_duplicates(store, parse_policy([]), DedupOptions(max_hamming=4), decisions)
    return resolve(store, report.groups, decisions=decisions, **{"delete_files": False, **how})


def test_objects_move_to_a_quarantine_prefix_and_undo_restores_them_byte_identical(
    make_store: StoreFactory, s3: Any
) -> None:
    store = make_store(clip_dim=4)
    rows = _bucket_library(store, s3)
    decisions = MemoryDecisions()

    resolution = _resolve(store, decisions, move_to=QUARANTINE)
    assert resolution.failed == []
    assert sorted(a.path for a in resolution.actions) == sorted([BACKUP, COPY])
    assert {a.path: a.target for a in resolution.actions} == {
        BACKUP: "s3://quarantine/dups/photos/backup/keep.jpg",
        COPY: "s3://quarantine/dups/photos/2019/copy.jpg",
    }
    assert _get(s3, BACKUP) is None and _get(s3, COPY) is None
    assert _get(s3, "s3://quarantine/dups/photos/2019/copy.jpg") == CONTENT["copy.jpg"]
    assert str(resolution.manifest).startswith("s3://quarantine/dups/.lookalike-manifest-")
    assert len(read_manifest(resolution.manifest).entries) == 2
    [keeper] = store.get([rows["keep.jpg"].id])
    assert keeper.all_paths == (KEEP,)
    assert store.get([rows["copy.jpg"].id]) == []  # its only path went: the row went

    result = undo(store, resolution.manifest, decisions)
    assert [o.status for o in result.outcomes] == ["restored", "restored"], result.outcomes
    assert _get(s3, BACKUP) == CONTENT["keep.jpg"] and _get(s3, COPY) == CONTENT["copy.jpg"]
    assert _get(s3, "s3://quarantine/dups/photos/2019/copy.jpg") is None
    [keeper] = store.get([rows["keep.jpg"].id])
    assert sorted(keeper.all_paths) == sorted([KEEP, BACKUP])
    [copy] = store.get([rows["copy.jpg"].id])
    assert copy.all_paths == (COPY,)
    again = undo(store, resolution.manifest, decisions)  # harmless: all already back
    assert [o.status for o in again.outcomes] == ["already restored"] * 2


def test_an_object_in_the_way_at_undo_is_not_overwritten(make_store: StoreFactory, s3: Any) -> None:
    store = make_store(clip_dim=4)
    rows = _bucket_library(store, s3)
    decisions = MemoryDecisions()
    resolution = _resolve(store, decisions, move_to=QUARANTINE)
    assert resolution.failed == []
    _put(s3, COPY, b"a new object at the old key")

    result = undo(store, resolution.manifest, decisions)
    by_path = {o.original: o for o in result.outcomes}
    assert by_path[BACKUP].status == "restored"
    assert by_path[COPY].status == "failed"
    assert f"{COPY} exists; not overwritten" in str(by_path[COPY].error)
    assert _get(s3, COPY) == b"a new object at the old key"
    assert _get(s3, "s3://quarantine/dups/photos/2019/copy.jpg") == CONTENT["copy.jpg"]
    assert store.get([rows["copy.jpg"].id]) == []  # not restored: its row stays gone


def test_local_and_web_rows_are_not_changed_by_an_s3_move_and_say_why(
    make_store: StoreFactory, s3: Any
) -> None:
    store = make_store(clip_dim=4)
    _put(s3, KEEP, CONTENT["keep.jpg"])
    web = "https://example.invalid/keep.jpg"
    local = "/nonexistent/library/keep.jpg"
    store.upsert([_row("keep.jpg", BASE, KEEP, web, local)])
    decisions = MemoryDecisions()

    resolution = _resolve(store, decisions, move_to=QUARANTINE)
    errors = {a.path: a.error for a in resolution.failed}
    assert sorted(errors) == sorted([web, local])
    assert "a web URL cannot be moved or deleted" in str(errors[web])
    assert "quarantine it with a local --move-to folder" in str(errors[local])
    assert resolution.manifest is None
    deleted = _resolve(store, decisions, move_to=None, delete_files=True)
    assert "a web URL cannot be moved or deleted" in str(
        {a.path: a.error for a in deleted.failed}[web]
    )


def test_delete_removes_objects_and_a_missing_bucket_fails_each_entry_alone(
    make_store: StoreFactory, s3: Any
) -> None:
    store = make_store(clip_dim=4)
    rows = _bucket_library(store, s3)
    decisions = MemoryDecisions()
    refused = _resolve(store, decisions, move_to="s3://no-such-bucket/q")
    assert sorted(a.path for a in refused.failed) == sorted([BACKUP, COPY])
    assert all("bucket does not exist" in str(a.error) for a in refused.failed), refused.failed
    assert _get(s3, COPY) == CONTENT["copy.jpg"]  # the original stays

    deleted = _resolve(store, decisions, move_to=None, delete_files=True)
    assert deleted.failed == [] and deleted.manifest is None
    assert _get(s3, BACKUP) is None and _get(s3, COPY) is None
    assert _get(s3, KEEP) == CONTENT["keep.jpg"]
    assert store.get([rows["copy.jpg"].id]) == []
