"""`lookalike migrate` upgrades a schema-1 or schema-2 collection in place on a real Milvus Lite
server: every row survives field for field, the fields added since (frame_codes, patch_codes) are
what ingestion computes for the same file, an unreadable image is kept and reported, the instance
id is kept, and a run stopped at any step is finished by the next one."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.app import app
from cli.stack.redis_server import RedisServer
from services.embed import ClipEmbedder, Embedder
from services.migration import SignalReader, Stage, inspect, migrate, staging_name
from services.pipeline import analyze_batch
from services.queue import QUEUE
from services.records import ImageRecord
from services.schema import SCHEMA_VERSION, SchemaContract
from services.sources import Sources
from services.store import IndexProfile, MilvusStore, milvus_client
from testkit.imagegen import make_photo_like
from tests.conftest import StoreFactory, drop_when_reachable, free_port
from tests.schema_v1 import create_v1_collection, insert_v1, read_rows

MAX_PIXELS = 10**8


@pytest.fixture(scope="module")
def tiny_embedder(tiny_clip_dir: Path) -> Embedder:
    return ClipEmbedder.load(str(tiny_clip_dir), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Redis: its queue is empty and no worker listens, unless a test says so."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    server = RedisServer(url, tmp_path_factory.mktemp("redis"))
    server.start()
    yield url
    server.stop()


@dataclass
class V1Collection:
    uri: str
    name: str
    instance: str
    clip_model: str | None
    clip_dim: int | None
    version: int
    before: dict[str, dict[str, Any]]  # every row as stored, before the migration
    # Per id, the added fields after the migration: computed, kept (frame_codes of a version-2
    # row) or "" for the unreadable ones.
    expected: dict[str, dict[str, str]]
    unreadable: dict[str, str]  # path reported -> the reason it should give
    # The computed fields had the images been decoded for pHash only.
    hash_draft_codes: dict[str, dict[str, str]]

    def env(self, redis_url: str) -> dict[str, str]:
        return {
            "LOOKALIKE_MILVUS_URI": self.uri,
            "LOOKALIKE_COLLECTION": self.name,
            "LOOKALIKE_REDIS_URL": redis_url,
            "LOOKALIKE_CLIP_MODEL": "none",
        }

    def reader(self) -> SignalReader:
        return SignalReader(Sources(), MAX_PIXELS, clip=self.clip_dim is not None)


def _photos(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    files = {name: folder / name for name in ("a.jpg", "bordered.jpg", "c.png", "gone.jpg")}
    make_photo_like(1, (640, 480)).save(files["a.jpg"], quality=90)
    canvas = Image.new("RGB", (640, 560), (0, 0, 0))
    canvas.paste(make_photo_like(2, (640, 420)), (0, 70))
    canvas.save(files["bordered.jpg"], quality=90)
    make_photo_like(3, (400, 300)).save(files["c.png"])
    make_photo_like(4, (640, 480)).save(files["gone.jpg"], quality=90)
    files["first.jpg"] = folder / "first.jpg"
    make_photo_like(5, (640, 480)).save(files["first.jpg"], quality=85)
    files["second.jpg"] = folder / "second.jpg"  # the same bytes: one row, two paths
    shutil.copyfile(files["first.jpg"], files["second.jpg"])
    files["changed.jpg"] = folder / "changed.jpg"
    make_photo_like(6, (640, 480)).save(files["changed.jpg"], quality=90)
    return files


def _decorated(records: list[ImageRecord]) -> list[ImageRecord]:
    """The records with every kind of field set (paths, tags, dup_*, cluster) to be carried."""
    by_name = {Path(r.path).name: r for r in records}
    first = by_name["first.jpg"]
    keep = [r for r in records if Path(r.path).name != "second.jpg"]
    out = []
    for index, record in enumerate(keep):
        record = replace(
            record,
            tags=("holiday", f"t{index}"),
            source="phone",
            cluster=index % 3,
            ingested_at=1_700_000_000 + index,
            dup_of=by_name["a.jpg"].id if record.id != by_name["a.jpg"].id else "",
            dup_hamming=4 if record.id != by_name["a.jpg"].id else -1,
            dup_cosine=0.5 if record.id != by_name["a.jpg"].id else -1.0,
        )
        if record.id == first.id:
            record = replace(record, paths=(first.path, str(by_name["second.jpg"].path)))
        out.append(record)
    return out


def _computed(record: ImageRecord, version: int) -> dict[str, str]:
    """The fields a migration from ``version`` computes, as ingestion computed them."""
    assert record.frames is not None and record.patches is not None
    fields = {"frame_codes": record.frames.to_hex(), "patch_codes": record.patches.to_hex()}
    return fields if version == 1 else {"patch_codes": fields["patch_codes"]}


def build_v1(uri: str, folder: Path, embedder: Embedder | None, version: int = 1) -> V1Collection:
    files = _photos(folder)
    paths = [str(p) for p in files.values()]
    outcome = analyze_batch(paths, embedder, max_pixels=MAX_PIXELS)
    assert not outcome.failures
    hash_only = analyze_batch(paths, None, max_pixels=MAX_PIXELS)
    name = f"mig_{uuid.uuid4().hex[:10]}"
    clip_model = "tiny-clip" if embedder is not None else None
    clip_dim = embedder.dim if embedder is not None else None
    instance = create_v1_collection(
        uri, name, clip_model=clip_model, clip_dim=clip_dim, version=version
    )
    decorated = _decorated(outcome.records)
    insert_v1(uri, name, decorated, with_clip=embedder is not None, version=version)
    # What ingestion computed for each file is the reference (CLIP draft when a model is loaded).
    expected = {r.id: _computed(r, version) for r in outcome.records}
    hash_draft = {r.id: _computed(r, version) for r in hash_only.records}
    by_name = {Path(r.path).name: r.id for r in outcome.records}
    files["gone.jpg"].unlink()
    files["first.jpg"].unlink()  # its row still has second.jpg
    make_photo_like(7, (640, 480)).save(files["changed.jpg"], quality=90)
    for lost in (by_name["gone.jpg"], by_name["changed.jpg"]):
        expected[lost] = {field: "" for field in expected[lost]}
    if version == 2:  # the stored frame codes are kept, readable or not
        for record in decorated:
            assert record.frames is not None
            expected[record.id]["frame_codes"] = record.frames.to_hex()
    unreadable = {
        str(files["gone.jpg"]): "file not found",
        str(files["changed.jpg"]): "its content changed since it was stored",
    }
    before = read_rows(uri, name)
    assert "patch_codes" not in next(iter(before.values()))
    assert ("frame_codes" in next(iter(before.values()))) is (version == 2)
    return V1Collection(
        uri, name, instance, clip_model, clip_dim, version, before, expected, unreadable,
        hash_draft,
    )  # fmt: skip


@pytest.fixture(params=["clip", "hash-only", "hash-only-v2"])
def v1(
    request: pytest.FixtureRequest, milvus_uri: str, tmp_path: Path, tiny_embedder: Embedder
) -> Iterator[V1Collection]:
    embedder = tiny_embedder if request.param == "clip" else None
    version = 2 if request.param.endswith("-v2") else 1
    collection = build_v1(milvus_uri, tmp_path / "photos", embedder, version)
    yield collection
    drop_when_reachable(milvus_uri, collection.name)
    drop_when_reachable(milvus_uri, staging_name(collection.name))


def run_cli(env: dict[str, str], *args: str) -> Any:
    result = CliRunner().invoke(app, ["migrate", *args], env=env)
    return result


def check_migrated(v1: V1Collection) -> None:
    """Every row kept field for field, the added fields as ingestion computes them, the
    instance kept, no staging collection left, and the collection opens with the current
    code."""
    after = read_rows(v1.uri, v1.name)
    assert set(after) == set(v1.before)
    for content_id, row in after.items():
        expected = v1.expected[content_id]
        assert {name: row.pop(name) for name in expected} == expected, content_id
        before = {k: v for k, v in v1.before[content_id].items() if k not in expected}
        assert row == before
    client = milvus_client(v1.uri)
    try:
        description = client.describe_collection(v1.name)["description"]
        assert not client.has_collection(staging_name(v1.name))
    finally:
        client.close()
    assert SchemaContract.instance_of(description) == v1.instance
    assert SchemaContract.from_description(v1.name, description).schema_version == SCHEMA_VERSION
    store = MilvusStore.connect(
        v1.uri, v1.name, SchemaContract.current(v1.clip_model, v1.clip_dim), create=False
    )
    try:
        assert store.instance == v1.instance
        assert store.count() == len(v1.before)
        patched = {r.id: r.patches for r in store.iterate(light=True)}
        assert {i for i, p in patched.items() if p is None} == {
            i for i, fields in v1.expected.items() if not fields["patch_codes"]
        }
    finally:
        store.close()


def test_migrate_copies_every_row_and_computes_frame_codes(
    v1: V1Collection, redis_url: str
) -> None:
    result = run_cli(v1.env(redis_url), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == len(v1.before)
    assert summary["migrated"] == len(v1.before) - len(v1.unreadable)
    assert summary["from_version"] == v1.version
    assert summary["schema_version"] == SCHEMA_VERSION
    assert {u["path"]: u["error"] for u in summary["unreadable"]} == v1.unreadable
    assert summary["seconds"] > 0
    check_migrated(v1)
    if v1.clip_dim is not None:
        # The draft size matters: decoded for pHash alone, some code would differ.
        assert any(
            v1.hash_draft_codes[i]["patch_codes"] != fields["patch_codes"]
            for i, fields in v1.expected.items()
            if fields["patch_codes"]
        )
    again = run_cli(v1.env(redis_url))
    assert again.exit_code == 0, again.output
    assert f"already at schema version {SCHEMA_VERSION}" in again.output


class KilledError(Exception):
    """Stands in for a kill at one step of a migration."""


@pytest.mark.parametrize(
    ("stop_at", "stage"),
    [
        ("copy-staging", Stage.COPYING),  # after the first batch into the staging collection
        ("create", Stage.COPIED),  # the original dropped, not re-created yet
        ("copy-back", Stage.RESTORING),  # after the first batch back
    ],
)
def test_a_stopped_migration_resumes(
    v1: V1Collection, redis_url: str, stop_at: str, stage: Stage
) -> None:
    def progress(phase: str, done: int, total: int) -> None:
        into_staging = phase.endswith(staging_name(v1.name))
        if stop_at == "copy-staging" and into_staging and done > 0:
            raise KilledError
        if stop_at == "create" and phase == "create":
            raise KilledError
        if stop_at == "copy-back" and phase.startswith(f"copy {staging_name(v1.name)}") and done:
            raise KilledError

    client = milvus_client(v1.uri)
    try:
        plan = inspect(client, v1.uri, v1.name)
        assert plan.stage is Stage.FRESH
        with pytest.raises(KilledError):
            migrate(client, v1.uri, plan, v1.reader(), progress=progress, batch_size=2)
        assert inspect(client, v1.uri, v1.name).stage is stage
    finally:
        client.close()
    dry = run_cli(v1.env(redis_url), "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["stage"] == stage.value
    result = run_cli(v1.env(redis_url), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["stage"] == stage.value
    assert {u["path"] for u in summary["unreadable"]} == set(v1.unreadable)
    check_migrated(v1)


def test_dry_run_changes_nothing(v1: V1Collection, redis_url: str) -> None:
    client = milvus_client(v1.uri)
    try:
        description = client.describe_collection(v1.name)["description"]
    finally:
        client.close()
    result = run_cli(v1.env(redis_url), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert (plan["stage"], plan["schema_version"], plan["rows"]) == (
        "fresh", v1.version, len(v1.before)
    )  # fmt: skip
    assert any("drop" in step for step in plan["steps"])
    text = run_cli(v1.env(redis_url), "--dry-run")
    assert text.exit_code == 0 and "would" in text.output
    client = milvus_client(v1.uri)
    try:
        assert client.describe_collection(v1.name)["description"] == description
        assert not client.has_collection(staging_name(v1.name))
    finally:
        client.close()
    assert read_rows(v1.uri, v1.name) == v1.before


def test_refuses_while_the_queue_holds_batches(v1: V1Collection, redis_url: str) -> None:
    import redis

    queue = redis.Redis.from_url(redis_url)
    queue.lpush(QUEUE, b"{}")
    try:
        result = run_cli(v1.env(redis_url))
    finally:
        queue.delete(QUEUE)
        queue.close()
    assert result.exit_code == 1
    assert "1 batch(es) queued" in result.output and "workers must not write" in result.output
    assert read_rows(v1.uri, v1.name) == v1.before


def test_a_current_collection_is_left_alone(make_store: StoreFactory, redis_url: str) -> None:
    store = make_store()
    env = {
        "LOOKALIKE_MILVUS_URI": store.uri,
        "LOOKALIKE_COLLECTION": store.collection,
        "LOOKALIKE_REDIS_URL": redis_url,
    }
    result = run_cli(env, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stage"] == "current"


def test_a_current_collection_on_an_earlier_index_gets_the_current_one(
    milvus_uri: str, redis_url: str
) -> None:
    """A CLIP collection created with FLAT (the index Milvus Lite got before IVF_FLAT) keeps its
    rows and answers the same search once `lookalike migrate` rebuilt the index."""
    name = f"flat_{uuid.uuid4().hex[:8]}"
    contract = SchemaContract.current("test-model", 8)
    flat = replace(IndexProfile.lite(), clip_index="FLAT", clip_params={})
    store = MilvusStore.connect(milvus_uri, name, contract, profile=flat)
    env = {
        "LOOKALIKE_MILVUS_URI": milvus_uri,
        "LOOKALIKE_COLLECTION": name,
        "LOOKALIKE_REDIS_URL": redis_url,
    }
    try:
        records = [
            ImageRecord(
                id=f"{i:064x}",
                path=f"/p/{i}.jpg",
                phash=bytes(8),
                width=64,
                height=64,
                format="JPEG",
                bytes=1000,
                clip=np.eye(8, dtype=np.float32)[i % 8] + i / 100,
            )
            for i in range(40)
        ]
        store.upsert(records)
        assert store.stale_indexes() == ["clip"]
        before = [h.record.id for h in store.search_clip(records[3].clip, "", 5)]

        planned = run_cli(env, "--dry-run", "--json")
        assert planned.exit_code == 0, planned.output
        payload = json.loads(planned.stdout)
        assert payload["stage"] == "current" and payload["indexes_rebuilt"] == []
        assert any("rebuild the index of 'clip'" in step for step in payload["steps"])
        assert store.stale_indexes() == ["clip"]

        done = run_cli(env, "--json")
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["indexes_rebuilt"] == ["clip"]
        assert store.stale_indexes() == []
        assert store.client.describe_index(name, "clip")["index_type"] == "IVF_FLAT"
        assert store.count() == 40
        assert [h.record.id for h in store.search_clip(records[3].clip, "", 5)] == before
        again = run_cli(env, "--json")
        assert json.loads(again.stdout)["steps"] == []
    finally:
        store.drop()
        store.close()


def test_other_collections_are_refused(milvus_uri: str, redis_url: str) -> None:
    name = f"other_{uuid.uuid4().hex[:8]}"
    client = milvus_client(milvus_uri)
    try:
        client.create_collection(name, dimension=4, description="not ours")
    finally:
        client.close()
    try:
        env = {
            "LOOKALIKE_MILVUS_URI": milvus_uri,
            "LOOKALIKE_COLLECTION": name,
            "LOOKALIKE_REDIS_URL": redis_url,
        }
        result = run_cli(env)
        assert result.exit_code == 1
        assert "was not created by lookalike" in result.output
        missing = run_cli(env | {"LOOKALIKE_COLLECTION": f"none_{uuid.uuid4().hex[:8]}"})
        assert missing.exit_code == 1 and "no collection" in missing.output
    finally:
        drop_when_reachable(milvus_uri, name)


@pytest.mark.parametrize("v1", ["hash-only"], indirect=True)
def test_refuses_while_a_worker_answers(v1: V1Collection, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    from tests.ingest.conftest import ROOT, IngestEnv

    url = f"redis://127.0.0.1:{free_port()}/0"
    redis_server = RedisServer(url, tmp_path / "worker-redis")
    redis_server.start()
    home = tmp_path / "home"
    home.mkdir()
    plain = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
    env = plain | v1.env(url) | {"LOOKALIKE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    setup = IngestEnv(env, redis_server, v1.uri, v1.name, home)
    try:
        setup.start_worker()
        result = run_cli(v1.env(url))
    finally:
        for worker in setup.workers:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(5)
        redis_server.stop()
    assert result.exit_code == 1
    assert "1 worker(s) live (test-" in result.output
    assert read_rows(v1.uri, v1.name) == v1.before
