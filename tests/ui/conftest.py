"""The UI against the real stack: a Milvus Lite server, a Redis server, a collection indexed from
the demo photos (originals and transformed copies) with a tiny CLIP saved locally."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from cli.demo import build_demo_collection
from cli.stack.redis_server import RedisServer
from services.embed import ClipEmbedder
from services.ingestion import MatchPolicy, ProcessLocks, ingest_paths
from services.schema import SchemaContract
from services.store import MilvusStore
from tests.conftest import drop_when_reachable, free_port

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "ui" / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
TITLES = ["Search", "Duplicates", "Clusters", "Ingest", "Collection"]  # the navigation's
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
        return MilvusStore.connect(self.milvus_uri, self.collection, contract)

    def app(self, page: str | None = None) -> AppTest:
        """A fresh AppTest of ui/app.py (caches cleared: settings are read anew), on ``page``."""
        st.cache_resource.clear()
        st.cache_data.clear()
        test = AppTest.from_file(str(APP), default_timeout=120)
        test.run()
        if page is not None:
            test.switch_page(f"views/{page}.py").run()
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
    store = MilvusStore.connect(
        milvus_uri, collection, SchemaContract.current(embedder.model_id, embedder.dim)
    )
    outcome = ingest_paths(
        store,
        embedder,
        [str(f) for f in files],
        locks=ProcessLocks(),
        policy=MatchPolicy(max_hamming=8, min_cosine=0.95),
        max_pixels=100_000_000,
        source="demo",
    )
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
        drop_when_reachable(milvus_uri, collection)


@contextmanager
def running_ui(env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``lookalike ui`` as a real process on a free port with ``env`` (LOOKALIKE_* over
    os.environ), its output in ``log``; yields its URL and the process once it answers, and
    stops it with SIGTERM (as a service manager does) afterwards."""
    port = free_port()
    env = dict(os.environ) | env | {"LOOKALIKE_UI_PORT": str(port), "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "ui"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the UI did not start:\n" + log.read_text()
            time.sleep(0.3)
        yield url, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        finally:
            # Whatever happened, leave nothing running (test_ui_process checks the stop itself).
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's headless Chromium through Playwright (no browser is downloaded)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


def nav_titles(page: Any) -> list[str]:
    """The entries of a browser page's sidebar navigation, without their icons' names."""
    links = page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
    return [text.splitlines()[-1] for text in links]
