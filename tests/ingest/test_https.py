"""Ingestion of image URLs (a real HTTP server on 127.0.0.1) through real Redis, real Celery
worker processes and the real Milvus Lite server."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.imagegen import make_photo_like
from testkit.webserver import Route, WebServer, web_server
from tests.ingest.conftest import IngestEnv

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    make_photo_like(seed, (160, 120)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def web() -> Iterator[WebServer]:
    with web_server() as server:
        yield server


def test_a_url_list_is_ingested_then_skipped_by_etag(
    ingest_env: IngestEnv, web: WebServer, tmp_path: Path
) -> None:
    for i in range(6):
        web.routes[f"/img{i}.jpg"] = Route(jpeg(40_000 + i), headers={"ETag": f'"e{i}"'})
    web.routes["/plain.jpg"] = Route(jpeg(40_100))  # no ETag nor Last-Modified
    web.routes["/moved.jpg"] = Route(redirect_to="/img0.jpg")
    web.routes["/text.jpg"] = Route(b"not an image", headers={"ETag": '"t"'})
    good = [web.url(f"/img{i}.jpg") for i in range(6)] + [web.url("/plain.jpg")]
    listing = tmp_path / "urls.txt"
    listing.write_text(
        "# photos\n" + "\n".join([*good, web.url("/gone.jpg"), web.url("/text.jpg")]) + "\n"
    )
    ingest_env.start_worker(concurrency=2)

    first = ingest_env.ingest_json("--urls-from", str(listing), web.url("/moved.jpg"), "--wait")
    assert first["ingested"] == len(good) + 1, first  # the redirect's target is one more path
    reasons = {f["path"]: f["error"] for f in first["failed"]}  # type: ignore[attr-defined]
    assert reasons[web.url("/gone.jpg")] == "not found (HTTP 404)"
    assert "image" in reasons[web.url("/text.jpg")]
    paths = sorted(p for r in ingest_env.store().iterate() for p in r.all_paths)
    assert paths == sorted([*good, web.url("/moved.jpg")])

    again = ingest_env.ingest_json("--urls-from", str(listing), "--wait")
    # Skipped by ETag; /plain.jpg has no validator and is fetched again (and stored as it is).
    assert again["skipped"] == 6 and again["ingested"] == 1, again
    assert web.hits["/plain.jpg"] == 2 and web.hits["/img1.jpg"] == 1
