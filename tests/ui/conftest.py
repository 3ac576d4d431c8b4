"""The UI against the real stack: a Milvus Lite server, a Redis server, a collection indexed from
the demo photos (originals and transformed copies) with a tiny CLIP saved locally."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from ingest.redis_server import RedisServer
from services.demo import build_demo_collection
from services.embed import ClipEmbedder
from services.pipeline import index_batch
from services.schema import SchemaContract
from services.store import MilvusStore, drop_collection
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "ui" / "app.py"
SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins")


@dataclass(frozen=True)
class UiStack:
    env: dict[str, str]
    home: Path
    photos: Path
    collection: str
    milvus_uri: str
    redis_url: str

    def store(self) -> MilvusStore:
        from services.store import stored_contract

        contract = stored_contract(self.milvus_uri, self.collection)
        assert contract is not None
        return MilvusStore(self.milvus_uri, self.collection, contract)

    def app(self, page: str | None = None) -> AppTest:
        """A fresh AppTest of ui/app.py (caches cleared: settings are read anew), on ``page``."""
        st.cache_resource.clear()
        st.cache_data.clear()
        test = AppTest.from_file(str(APP), default_timeout=120)
        test.run()
        if page is not None:
            test.switch_page(f"pages/{page}.py").run()
        return test


@pytest.fixture(scope="module")
def ui_stack(
    milvus_uri: str, tiny_clip_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UiStack]:
    root = tmp_path_factory.mktemp("ui")
    home = root / "home"
    photos = root / "photos"
    files = build_demo_collection(photos, samples=SAMPLES)
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    redis = RedisServer(redis_url, root / "redis")
    redis.start()
    collection = f"ui_{uuid.uuid4().hex[:10]}"
    embedder = ClipEmbedder.load(str(tiny_clip_dir), device="cpu", precision="fp32")
    store = MilvusStore(
        milvus_uri, collection, SchemaContract.current(embedder.model_id, embedder.dim)
    )
    outcome = index_batch(store, embedder, files, max_pixels=100_000_000, source="demo")
    assert not outcome.failures, outcome.failures
    store.close()
    env = {
        "LOOKALIKE_MILVUS_URI": milvus_uri,
        "LOOKALIKE_REDIS_URL": redis_url,
        "LOOKALIKE_COLLECTION": collection,
        "LOOKALIKE_HOME": str(home),
        "LOOKALIKE_CLIP_MODEL": str(tiny_clip_dir),
        "LOOKALIKE_CLIP_DEVICE": "cpu",
        "LOOKALIKE_CLIP_PRECISION": "fp32",
    }
    saved = {k: v for k, v in os.environ.items() if k.startswith("LOOKALIKE_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        yield UiStack(env, home, photos, collection, milvus_uri, redis_url)
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)
        st.cache_resource.clear()
        redis.stop()
        drop_collection(milvus_uri, collection)
