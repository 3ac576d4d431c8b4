"""Session-wide real services: a Milvus Lite server process and a tiny CLIP saved to disk."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli.stack.milvus_lite import EmbeddedMilvus
from cli.stack.net import free_port
from cli.stack.redis_server import RedisServer
from services.schema import SchemaContract
from services.store import DeletionNotices, MilvusStore
from testkit.s3server import S3Server


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMilvus]:
    """A real milvus-lite server on a free port, shared by the whole session."""
    server = EmbeddedMilvus(tmp_path_factory.mktemp("milvus-home"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def milvus_uri(milvus_server: EmbeddedMilvus) -> str:
    return milvus_server.uri


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP (config, weights, tokenizer, processor) saved locally: the real
    from_pretrained path without a model hub."""
    from testkit.tinyclip import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


StoreFactory = Callable[..., MilvusStore]


@pytest.fixture
def make_store(milvus_uri: str) -> Iterator[StoreFactory]:
    """Opens stores on fresh, uniquely named collections and drops them afterwards."""
    opened: list[MilvusStore] = []

    def factory(
        clip_model: str | None = "test-model",
        clip_dim: int | None = 8,
        name: str | None = None,
        notices: DeletionNotices | None = None,
    ) -> MilvusStore:
        collection = name or f"t_{uuid.uuid4().hex[:12]}"
        store = MilvusStore.connect(
            milvus_uri, collection, SchemaContract.current(clip_model, clip_dim), notices=notices
        )
        opened.append(store)
        return store

    yield factory
    for store in opened:
        try:
            store.drop()
        finally:
            store.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 protocol server (moto) on 127.0.0.1, in its own process, for the session."""
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log")
    server.start()
    yield server
    server.stop()


def drop_when_reachable(uri: str, collection: str, attempts: int = 3) -> None:
    """Drop a test's collection in teardown. pymilvus shares one channel per server across a
    process; made by a client with pymilvus's 10 s pings, milvus-lite closed it (GOAWAY
    "too_many_pings") and the first call failed once. Every lookalike client now pings as Lite
    allows (services.store.GRPC_OPTIONS); the retry stays as a guard for a teardown."""
    import time

    from services.errors import StoreUnavailableError
    from services.store import drop_collection

    for attempt in range(attempts):
        try:
            drop_collection(uri, collection)
            return
        except StoreUnavailableError:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real Redis of the test's own on a free port (not the machine's: nothing shared)."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    with RedisServer(url, tmp_path / "redis"):
        yield url
